package query

import (
	"errors"
	"net/http"
	"time"

	"github.com/stackvps/stackvps/accounts"
)

// ownerJSON is one user's relation to a point.
type ownerJSON struct {
	Point       string                `json:"point"`
	UserID      int64                 `json:"user_id"`
	Email       string                `json:"email"`
	Name        string                `json:"name"`
	Relation    accounts.Relation     `json:"relation"`
	Permissions []accounts.Permission `json:"permissions"`
	// GrantedBy is the user who granted it; null for the system or the
	// command line.
	GrantedBy *int64    `json:"granted_by"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// handleOwners serves GET /api/users/owners/?point=: the users related to
// a point the caller can read.
func (a *API) handleOwners(w http.ResponseWriter, r *http.Request) error {
	if _, err := negotiate(r, jsonOnly); err != nil {
		return err
	}
	p, err := parseParams(r, []string{"point"})
	if err != nil {
		return err
	}
	pts, err := pointsParam(p, true, 1)
	if err != nil {
		return err
	}
	owners, err := a.acc.Owners(r.Context(), principal(r), pts[0])
	if err != nil {
		return fromAccounts(err, "point")
	}
	out := listJSON[ownerJSON]{Results: make([]ownerJSON, len(owners))}
	for i, o := range owners {
		oj := ownerJSON{Point: o.Point, UserID: o.UserID, Email: o.Email, Name: o.Name, Relation: o.Relation,
			Permissions: o.Permissions, CreatedAt: o.CreatedAt.UTC(), UpdatedAt: o.UpdatedAt.UTC()}
		if o.GrantedBy != 0 {
			oj.GrantedBy = new(o.GrantedBy)
		}
		out.Results[i] = oj
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// notificationsInput is the body of POST /api/users/notifications/.
type notificationsInput struct {
	Point string `json:"point"`
	// UserID is whose preferences these are; the caller's when absent.
	UserID            *int64   `json:"user_id"`
	NotificationTypes []string `json:"notification_types"`
	Channels          []string `json:"channels"`
	WebhookURL        string   `json:"webhook_url"`
	Phone             string   `json:"phone"`
	Language          string   `json:"language"`
	// Active defaults to true.
	Active *bool `json:"active"`
}

// notificationsJSON is a user's notification preferences for a point.
type notificationsJSON struct {
	Point             string                      `json:"point"`
	UserID            int64                       `json:"user_id"`
	NotificationTypes []accounts.NotificationType `json:"notification_types"`
	Channels          []accounts.Channel          `json:"channels"`
	WebhookURL        string                      `json:"webhook_url"`
	Phone             string                      `json:"phone"`
	Language          string                      `json:"language"`
	Active            bool                        `json:"active"`
	UpdatedAt         time.Time                   `json:"updated_at"`
}

// notificationFieldParams map the start of an accounts.ErrInvalid message
// about notification preferences to the body field.
var notificationFieldParams = [][2]string{
	{"notification type", "notification_types"}, {"channel sms", "phone"}, {"channel webhook", "webhook_url"},
	{"channel", "channels"}, {"active notifications", "channels"}, {"phone", "phone"}, {"webhook URL", "webhook_url"},
	{"language", "language"},
}

// handleSetNotifications serves POST /api/users/notifications/: it sets
// the caller's preferences for a point they can read, or another related
// user's with manage_notifications.
func (a *API) handleSetNotifications(w http.ResponseWriter, r *http.Request) error {
	var in notificationsInput
	if _, err := jsonCall(w, r, "", &in); err != nil {
		return err
	}
	if in.Point == "" {
		return badParam("point", "required: the code of the point")
	}
	if err := checkIdent("point", in.Point); err != nil {
		return err
	}
	pr := principal(r)
	userID := pr.UserID()
	if in.UserID != nil {
		if *in.UserID <= 0 {
			return badParam("user_id", "must be a positive user id")
		}
		userID = *in.UserID
	}
	prefs := accounts.NotificationPrefs{WebhookURL: in.WebhookURL, Phone: in.Phone, Language: in.Language,
		Active: in.Active == nil || *in.Active}
	for _, t := range in.NotificationTypes {
		prefs.Types = append(prefs.Types, accounts.NotificationType(t))
	}
	for _, c := range in.Channels {
		prefs.Channels = append(prefs.Channels, accounts.Channel(c))
	}
	n, err := a.acc.SetNotifications(r.Context(), pr, in.Point, userID, prefs)
	switch {
	case errors.Is(err, accounts.ErrInvalid):
		return fromAccounts(err, paramInMessage(err, "body", notificationFieldParams...))
	case errors.Is(err, accounts.ErrNotFound):
		// The point (not visible, or absent) or the user's relation to it.
		return fromAccounts(err, paramInMessage(err, "point", [2]string{"user", "user_id"}))
	case err != nil:
		return fromAccounts(err, "point")
	}
	writeJSON(w, http.StatusOK, notificationsJSON{Point: n.Point, UserID: n.UserID, NotificationTypes: n.Types,
		Channels: n.Channels, WebhookURL: n.WebhookURL, Phone: n.Phone, Language: n.Language, Active: n.Active,
		UpdatedAt: n.UpdatedAt.UTC()})
	return nil
}
