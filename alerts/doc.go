// Package alerts stores alert rules and the alerts they raise in
// PostgreSQL (tables alert_rules, alerts and alert_events, migration
// 0007): the audited rule changes and acknowledgements the API makes on a
// principal's behalf, and the lifecycle and notification outbox the alert
// stage (stages/alert) drives.
//
// # Authorization
//
// Reading rules and alerts needs read on their point; creating, changing
// and deleting rules and acknowledging alerts needs manage_notifications.
// A rule or alert on a point the principal cannot read answers
// accounts.ErrNotFound, exactly as one that does not exist. Rule changes
// and acknowledgements are written to audit_log (entity types alert_rule
// and alert) in the same transaction as the change.
//
// # Lifecycle
//
// An alert is open when its rule starts firing (event opened), is notified
// again every renotify interval while it keeps firing and is not
// acknowledged (event renotified), and is resolved when the condition
// clears (event resolved), acknowledged or not. At most one alert per rule
// and variable is unresolved (a partial unique index), so an alert is
// deduplicated while open, across restarts and replicas. A rule deleted,
// deactivated, or changed in kind or variable has its unresolved alerts
// resolved without notification.
//
// # Outbox
//
// Every event is inserted into alert_events in the transaction that
// changes the alert. ProducePending produces its notifications (one per
// subscribed user, id alert:<alert_id>:<event>:<n>:<user_id>) and marks it
// produced only once Kafka acknowledged them all, so an event is never
// lost: a crash in between produces it again, with the same ids and
// content, which the notify stage recognises.
package alerts
