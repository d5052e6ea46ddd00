-- Notifications: one delivery per notification and channel (the notify
-- stage's durable outbox), and the in-app inbox users read through the API.
--
-- The notify stage inserts a user's deliveries for one notification in one
-- transaction, before it commits the Kafka offset of the notification, so a
-- crash replays the record and ON CONFLICT DO NOTHING on the primary key
-- (the notification's idempotency key and the channel) keeps one row. Its
-- channel workers then move each row queued -> sending -> sent | queued
-- (retry) | failed; "sending" is written and committed before the external
-- call, with the attempt counted, so a row still "sending" after
-- notify.claim_timeout is known to be an ambiguous attempt of a replica that
-- died mid-send.

CREATE TABLE notification_deliveries (
    notification_id text        NOT NULL CHECK (notification_id <> ''),
    channel         text        NOT NULL CHECK (channel IN ('email', 'sms', 'webhook', 'in_app')),
    user_id         bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    point           text,
    type            text        NOT NULL,
    severity        text        NOT NULL,
    language        text        NOT NULL CHECK (language IN ('es', 'en')),
    -- Where it goes, resolved when queued so that every attempt goes to the
    -- same place: the email address, the E.164 phone, the webhook URL; empty
    -- for in_app.
    destination     text        NOT NULL DEFAULT '',
    -- The message rendered from the type's template in the user's language
    -- when queued, so a resend is identical to the first attempt.
    subject         text        NOT NULL,
    body            text        NOT NULL,
    -- The notification itself (id, type, severity, point, title, body,
    -- data, created_at): the webhook's JSON and the inbox row come from it.
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sending', 'sent', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      text,
    -- queued: when the next attempt is due; sending: when the claim of the
    -- replica sending it expires.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    -- The receiver's id of the message: SMTP Message-ID, the SMS
    -- provider's message id, the in-app inbox id.
    provider_id     text,
    notification_created_at timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (notification_id, channel),
    CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);
-- The workers' queue: due rows of one channel, oldest first.
CREATE INDEX notification_deliveries_due_idx ON notification_deliveries (channel, next_attempt_at)
    WHERE status IN ('queued', 'sending');
CREATE INDEX notification_deliveries_user_idx ON notification_deliveries (user_id, created_at);
COMMENT ON TABLE notification_deliveries IS 'One row per notification and channel (email, sms, webhook, in_app): what was sent to whom, its status (queued, sending, sent, failed), attempts, the last error, when the next attempt is due, and the receiver''s message id. (notification_id, channel) is the idempotency key.';

CREATE TABLE inbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    notification_id text        NOT NULL CHECK (notification_id <> ''),
    point           text,
    type            text        NOT NULL,
    severity        text        NOT NULL,
    title           text        NOT NULL,
    body            text        NOT NULL,
    data            jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL,
    read_at         timestamptz,
    UNIQUE (user_id, notification_id)
);
-- A user's messages newest first (keyset pagination on id), all or unread.
CREATE INDEX inbox_user_idx ON inbox (user_id, id DESC);
CREATE INDEX inbox_unread_idx ON inbox (user_id, id DESC) WHERE read_at IS NULL;
COMMENT ON TABLE inbox IS 'In-app messages: one per user and notification (the UNIQUE constraint makes in-app delivery exactly once), rendered in the user''s language; read_at is set when the user marks it read.';
