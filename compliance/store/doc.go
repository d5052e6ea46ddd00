// Package store is the compliance database layer: the regulators' sources
// (compliance_sources), each point's configs (compliance_configs, with
// credentials sealed by compliance.Sealer), the reporting slots
// (compliance_submissions) and the append-only attempts
// (compliance_attempts). Migration 0006 creates the tables.
//
// Configs are changed through CreateConfig, UpdateConfig and EndConfig,
// each audited (audit_log) in the transaction of the change, without the
// credentials; two configs of the same point and source never overlap.
// The store checks no permissions: callers (the HTTP API) do, with
// accounts.
//
// Slots are created by EnsureSlots (PENDING, no data), filled by FillSlot
// from compliance records (highest version wins; after a slot was sent a
// higher version is kept as a correction, never resent automatically),
// written off by WriteOff (MISSING). The submitter (stages/submit) drives
// them with DueSlots, BeginAttempt, FinishAttempt, RecordInvalid, SetAside
// and Resolve; Policy.Next is the state machine. A user reopens a final
// slot with RequestResubmission (audited). ListSubmissions and
// GetSubmission read them back; the daily report is the scheduler's
// (stages/scheduler).
//
// Every method is safe for concurrent use; methods that change slots lock
// the slot's row, so replicas and users never move one slot concurrently.
package store
