package accounts

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stackvps/stackvps/audit"
)

// NotificationType is a kind of event a user may be told about.
type NotificationType string

// Notification types.
const (
	NotifyThreshold          NotificationType = "threshold"           // a variable crossed a configured limit
	NotifyDataGap            NotificationType = "data_gap"            // no data for longer than expected
	NotifyStuckSensor        NotificationType = "stuck_sensor"        // the same value repeated: sensor may be stuck
	NotifyTotalizerReset     NotificationType = "totalizer_reset"     // the totalizer dropped: meter reset or replaced
	NotifyComplianceMissing  NotificationType = "compliance_missing"  // a compliance period was not submitted
	NotifyComplianceRejected NotificationType = "compliance_rejected" // a regulator rejected a submission
	NotifyDailyReport        NotificationType = "daily_report"        // the daily compliance report
)

var allNotificationTypes = []NotificationType{NotifyThreshold, NotifyDataGap, NotifyStuckSensor, NotifyTotalizerReset,
	NotifyComplianceMissing, NotifyComplianceRejected, NotifyDailyReport}

// AllNotificationTypes returns every notification type.
func AllNotificationTypes() []NotificationType { return slices.Clone(allNotificationTypes) }

// Channel is how a notification reaches a user.
type Channel string

// Channels.
const (
	ChannelEmail   Channel = "email"
	ChannelSMS     Channel = "sms"     // needs Phone
	ChannelWebhook Channel = "webhook" // needs WebhookURL
	ChannelInApp   Channel = "in_app"
)

var allChannels = []Channel{ChannelEmail, ChannelSMS, ChannelWebhook, ChannelInApp}

// Languages of notifications.
const (
	LanguageSpanish = "es" // the default
	LanguageEnglish = "en"
)

// NotificationPrefs is what one user is told about one point, and how.
type NotificationPrefs struct {
	Point      string
	UserID     int64
	Types      []NotificationType
	Channels   []Channel
	WebhookURL string // required with ChannelWebhook; http or https
	Phone      string // required with ChannelSMS; E.164, e.g. +56912345678
	Language   string // "es" (default) or "en"
	Active     bool
	UpdatedAt  time.Time
}

// notificationsJSON is a preferences row in the audit log.
type notificationsJSON struct {
	Types      []NotificationType `json:"notification_types"`
	Channels   []Channel          `json:"channels"`
	WebhookURL string             `json:"webhook_url,omitempty"`
	Phone      string             `json:"phone,omitempty"`
	Language   string             `json:"language"`
	Active     bool               `json:"active"`
}

func (n NotificationPrefs) audit() notificationsJSON {
	return notificationsJSON{Types: n.Types, Channels: n.Channels, WebhookURL: n.WebhookURL, Phone: n.Phone,
		Language: n.Language, Active: n.Active}
}

var e164 = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)

// normalize validates n and returns it with types and channels deduplicated
// in canonical order and the default language.
func (n NotificationPrefs) normalize() (NotificationPrefs, error) {
	var types []NotificationType
	for _, t := range n.Types {
		if !slices.Contains(allNotificationTypes, t) {
			return n, fmt.Errorf("%w: notification type %q", ErrInvalid, t)
		}
	}
	for _, t := range allNotificationTypes {
		if slices.Contains(n.Types, t) {
			types = append(types, t)
		}
	}
	var chans []Channel
	for _, c := range n.Channels {
		if !slices.Contains(allChannels, c) {
			return n, fmt.Errorf("%w: channel %q", ErrInvalid, c)
		}
	}
	for _, c := range allChannels {
		if slices.Contains(n.Channels, c) {
			chans = append(chans, c)
		}
	}
	n.Types, n.Channels = types, chans
	if n.Types == nil {
		n.Types = []NotificationType{}
	}
	if n.Channels == nil {
		n.Channels = []Channel{}
	}
	if n.Active && len(n.Channels) == 0 {
		return n, fmt.Errorf("%w: active notifications need at least one channel", ErrInvalid)
	}
	n.Phone = strings.TrimSpace(n.Phone)
	if n.Phone != "" && !e164.MatchString(n.Phone) {
		return n, fmt.Errorf("%w: phone %q: want E.164, e.g. +56912345678", ErrInvalid, n.Phone)
	}
	if slices.Contains(n.Channels, ChannelSMS) && n.Phone == "" {
		return n, fmt.Errorf("%w: channel sms needs a phone", ErrInvalid)
	}
	n.WebhookURL = strings.TrimSpace(n.WebhookURL)
	if n.WebhookURL != "" {
		u, err := url.Parse(n.WebhookURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return n, fmt.Errorf("%w: webhook URL %q: want an http or https URL with a host", ErrInvalid, n.WebhookURL)
		}
	}
	if slices.Contains(n.Channels, ChannelWebhook) && n.WebhookURL == "" {
		return n, fmt.Errorf("%w: channel webhook needs a webhook URL", ErrInvalid)
	}
	switch n.Language {
	case "":
		n.Language = LanguageSpanish
	case LanguageSpanish, LanguageEnglish:
	default:
		return n, fmt.Errorf("%w: language %q: want es or en", ErrInvalid, n.Language)
	}
	return n, nil
}

const notificationColumns = `point, user_id, notification_types, channels, coalesce(webhook_url, ''), coalesce(phone, ''),
	language, active, updated_at`

func scanNotifications(r pgx.Row) (NotificationPrefs, error) {
	var n NotificationPrefs
	var types, chans []string
	err := r.Scan(&n.Point, &n.UserID, &types, &chans, &n.WebhookURL, &n.Phone, &n.Language, &n.Active, &n.UpdatedAt)
	n.Types = make([]NotificationType, len(types))
	for i, t := range types {
		n.Types[i] = NotificationType(t)
	}
	n.Channels = make([]Channel, len(chans))
	for i, c := range chans {
		n.Channels[i] = Channel(c)
	}
	return n, err
}

func getNotifications(ctx context.Context, q querier, point string, userID int64) (NotificationPrefs, error) {
	n, err := scanNotifications(q.QueryRow(ctx, `SELECT `+notificationColumns+` FROM point_notifications
		WHERE point = $1 AND user_id = $2`, point, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return NotificationPrefs{}, fmt.Errorf("notifications of user %d for point %q %w", userID, point, ErrNotFound)
	}
	if err != nil {
		return NotificationPrefs{}, fmt.Errorf("reading notifications of user %d for point %s: %w", userID, point, err)
	}
	return n, nil
}

// SetNotifications creates or replaces the user's notification preferences
// for point (prefs.Point and prefs.UserID are ignored) and returns them.
// Users set their own on any point they can read; setting someone else's
// needs manage_notifications. The user must have a relation to the point
// (ErrNotFound otherwise): nobody is told about a point they cannot see.
func (s *Store) SetNotifications(ctx context.Context, actor Principal, point string, userID int64, prefs NotificationPrefs) (NotificationPrefs, error) {
	var after NotificationPrefs
	err := s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		perm := PermManageNotifications
		if actor.is(userID) {
			perm = PermRead
		}
		if _, err := require(ctx, tx, actor, point, perm); err != nil {
			return nil, err
		}
		n, err := prefs.normalize()
		if err != nil {
			return nil, err
		}
		if _, err := getOwner(ctx, tx, point, userID, "FOR KEY SHARE OF o"); err != nil {
			return nil, err
		}
		before, err := getNotifications(ctx, tx, point, userID)
		exists := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		after, err = scanNotifications(tx.QueryRow(ctx, `INSERT INTO point_notifications AS n
				(point, user_id, notification_types, channels, webhook_url, phone, language, active)
			VALUES ($1, $2, $3, $4, NULLIF($5, ''), NULLIF($6, ''), $7, $8)
			ON CONFLICT (point, user_id) DO UPDATE SET notification_types = EXCLUDED.notification_types,
				channels = EXCLUDED.channels, webhook_url = EXCLUDED.webhook_url, phone = EXCLUDED.phone,
				language = EXCLUDED.language, active = EXCLUDED.active, updated_at = now()
			RETURNING `+notificationColumns,
			point, userID, stringsOf(n.Types), stringsOf(n.Channels), n.WebhookURL, n.Phone, n.Language, n.Active))
		if err != nil {
			return nil, fmt.Errorf("saving notifications of user %d for point %s: %w", userID, point, err)
		}
		e := &audit.Entry{Action: "notifications.set", EntityType: "point_notification", EntityID: ownerID(point, userID),
			Point: point, After: after.audit()}
		if exists {
			if before.audit().equal(after.audit()) {
				return nil, nil // unchanged: the upsert's updated_at rolls back with it
			}
			e.Before = before.audit()
		}
		return e, nil
	})
	return after, err
}

func (a notificationsJSON) equal(b notificationsJSON) bool {
	return slices.Equal(a.Types, b.Types) && slices.Equal(a.Channels, b.Channels) && a.WebhookURL == b.WebhookURL &&
		a.Phone == b.Phone && a.Language == b.Language && a.Active == b.Active
}

// Notifications returns the notification preferences for point the actor
// may see: everyone's with manage_notifications, else only their own (an
// empty list when they have none). The actor needs read.
func (s *Store) Notifications(ctx context.Context, actor Principal, point string) ([]NotificationPrefs, error) {
	a, err := require(ctx, s.pool, actor, point, PermRead)
	if err != nil {
		return nil, err
	}
	sql := `SELECT ` + notificationColumns + ` FROM point_notifications WHERE point = $1`
	args := []any{point}
	if !a.has(PermManageNotifications) {
		sql += ` AND user_id = $2`
		args = append(args, actor.userID)
	}
	rows, err := s.pool.Query(ctx, sql+` ORDER BY user_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("reading notifications for point %s: %w", point, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (NotificationPrefs, error) { return scanNotifications(r) })
	if err != nil {
		return nil, fmt.Errorf("reading notifications for point %s: %w", point, err)
	}
	return out, nil
}

func stringsOf[T ~string](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}
