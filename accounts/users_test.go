package accounts_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/accounts"
)

func TestUsersIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	admin := f.user("Root@Example.cl", accounts.RoleAdmin)
	ana := f.user("ana@example.cl", accounts.RoleUser)
	pa := f.login(ana)

	t.Run("emails are unique in any case", func(t *testing.T) {
		_, err := f.store.CreateUser(f.ctx, root, accounts.NewUser{Email: "ANA@example.CL"})
		require.ErrorIs(t, err, accounts.ErrConflict)
		u, err := f.store.UserByEmail(f.ctx, root, "root@example.cl")
		require.NoError(t, err)
		require.Equal(t, admin.ID, u.ID)
		require.Equal(t, "Root@Example.cl", u.Email, "stored as given")
		_, err = f.store.UpdateUser(f.ctx, root, ana.ID, accounts.UserChanges{Email: new("root@EXAMPLE.cl")})
		require.ErrorIs(t, err, accounts.ErrConflict)
	})

	t.Run("bad input", func(t *testing.T) {
		for _, email := range []string{"", "ana", "ana@", "@example.cl", "Ana <ana@example.cl>", "a b@example.cl"} {
			_, err := f.store.CreateUser(f.ctx, root, accounts.NewUser{Email: email})
			require.ErrorIs(t, err, accounts.ErrInvalid, "%q", email)
		}
		_, err := f.store.CreateUser(f.ctx, root, accounts.NewUser{Email: "x@example.cl", Role: "owner"})
		require.ErrorIs(t, err, accounts.ErrInvalid)
	})

	t.Run("users see and change only themselves", func(t *testing.T) {
		_, err := f.store.Users(f.ctx, pa)
		require.ErrorIs(t, err, accounts.ErrForbidden)
		_, err = f.store.CreateUser(f.ctx, pa, accounts.NewUser{Email: "friend@example.cl"})
		require.ErrorIs(t, err, accounts.ErrForbidden)
		_, err = f.store.User(f.ctx, pa, admin.ID)
		require.ErrorIs(t, err, accounts.ErrNotFound)
		_, err = f.store.UserByEmail(f.ctx, pa, "root@example.cl")
		require.ErrorIs(t, err, accounts.ErrNotFound)
		me, err := f.store.UserByEmail(f.ctx, pa, "ANA@example.cl")
		require.NoError(t, err)
		require.Equal(t, ana.ID, me.ID)
		me, err = f.store.UpdateUser(f.ctx, pa, ana.ID, accounts.UserChanges{Name: new("Ana B.")})
		require.NoError(t, err)
		require.Equal(t, "Ana B.", me.Name)
		_, err = f.store.UpdateUser(f.ctx, pa, ana.ID, accounts.UserChanges{Role: new(accounts.RoleAdmin)})
		require.ErrorIs(t, err, accounts.ErrForbidden)
		_, err = f.store.UpdateUser(f.ctx, pa, admin.ID, accounts.UserChanges{Name: new("pwned")})
		require.ErrorIs(t, err, accounts.ErrNotFound)
		require.ErrorIs(t, f.store.DeleteUser(f.ctx, pa, ana.ID), accounts.ErrForbidden)
		list, err := f.store.Users(f.ctx, root)
		require.NoError(t, err)
		require.Len(t, list, 2)
	})

	t.Run("the last active administrator stays", func(t *testing.T) {
		_, err := f.store.UpdateUser(f.ctx, root, admin.ID, accounts.UserChanges{Role: new(accounts.RoleUser)})
		require.ErrorIs(t, err, accounts.ErrConflict)
		_, err = f.store.UpdateUser(f.ctx, root, admin.ID, accounts.UserChanges{Active: new(false)})
		require.ErrorIs(t, err, accounts.ErrConflict)
		require.ErrorIs(t, f.store.DeleteUser(f.ctx, root, admin.ID), accounts.ErrConflict)

		// Two administrators demoting each other at once: one must stay.
		second := f.user("second@example.cl", accounts.RoleAdmin)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, id := range []int64{admin.ID, second.ID} {
			wg.Go(func() {
				_, errs[i] = f.store.UpdateUser(f.ctx, root, id, accounts.UserChanges{Role: new(accounts.RoleUser)})
			})
		}
		wg.Wait()
		failed := 0
		for _, err := range errs {
			if err != nil {
				require.ErrorIs(t, err, accounts.ErrConflict)
				failed++
			}
		}
		require.Equal(t, 1, failed, "%v", errs)
	})
}
