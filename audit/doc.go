// Package audit writes and reads the audit_log table: who changed what,
// from which state to which, when and in which request.
//
// Record is called by the stores inside the transaction of the change it
// describes, so a change and its audit row commit or roll back together.
// The table is append-only: a trigger refuses UPDATE, DELETE and TRUNCATE.
// List reads it back, newest first, for tests and the HTTP API (which must
// filter it to what the caller may see).
package audit
