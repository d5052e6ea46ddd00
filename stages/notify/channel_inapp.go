package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// InApp stores the message in the user's inbox. It is exactly once: the
// inbox row and the delivery's "sent" are written in one transaction, and
// UNIQUE (user_id, notification_id) refuses a second row whatever happens.
type InApp struct{}

// SendTx inserts the inbox row in tx (the dispatcher's transaction, which
// also marks the delivery sent) and returns its id.
func (InApp) SendTx(ctx context.Context, tx pgx.Tx, d Delivery) (string, error) {
	var p payload
	if err := json.Unmarshal(d.Payload, &p); err != nil {
		return "", Permanent(fmt.Errorf("decoding the stored notification: %w", err))
	}
	data, err := json.Marshal(p.Data)
	if err != nil {
		return "", Permanent(fmt.Errorf("encoding data: %w", err))
	}
	var id int64
	err = tx.QueryRow(ctx, `INSERT INTO inbox (user_id, notification_id, point, type, severity, title, body, data, created_at)
		VALUES ($1, $2, NULLIF($3, ''), $4, $5, $6, $7, $8, $9)
		ON CONFLICT (user_id, notification_id) DO UPDATE SET notification_id = EXCLUDED.notification_id
		RETURNING id`,
		d.UserID, d.NotificationID, d.Point, d.Type, d.Severity, d.Subject, d.Body, data, d.CreatedAt).Scan(&id)
	if err != nil {
		return "", fmt.Errorf("inserting the inbox message: %w", err)
	}
	return strconv.FormatInt(id, 10), nil
}

// txSender is a channel whose delivery is a database write, done in the
// same transaction as marking the delivery sent.
type txSender interface {
	SendTx(ctx context.Context, tx pgx.Tx, d Delivery) (string, error)
}
