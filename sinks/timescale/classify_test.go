package timescale

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/pipeline"
)

func TestClassifyBySQLState(t *testing.T) {
	cases := []struct {
		code string
		want errKind
	}{
		{"23505", errDuplicate}, // unique_violation
		{"22021", errRow},       // character_not_in_repertoire (a NUL byte)
		{"22008", errRow},       // datetime_field_overflow
		{"23502", errRow},       // not_null_violation
		{"23514", errRow},       // check_violation
		{"08006", errTransient}, // connection_failure
		{"40001", errTransient}, // serialization_failure
		{"40P01", errTransient}, // deadlock_detected
		{"53100", errTransient}, // disk_full
		{"53300", errTransient}, // too_many_connections
		{"57P01", errTransient}, // admin_shutdown
		{"57014", errTransient}, // query_canceled (statement_timeout)
		{"55P03", errTransient}, // lock_not_available
		{"42P01", errOther},     // undefined_table: stop, do not dead-letter
		{"42703", errOther},     // undefined_column
		{"XX000", errOther},     // internal_error
	}
	for _, tc := range cases {
		t.Run(tc.code, func(t *testing.T) {
			err := fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: tc.code})
			require.Equal(t, tc.want, kind(err))
			require.Equal(t, tc.want == errTransient, pipeline.IsTransient(classify("doing", err)))
		})
	}
	require.Equal(t, errTransient, kind(io.ErrUnexpectedEOF), "no SQLSTATE: the connection failed")
	require.Equal(t, errOther, kind(context.Canceled))
	require.False(t, pipeline.IsTransient(classify("doing", errors.Join(context.Canceled))))
}
