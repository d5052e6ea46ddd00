// Package pipeline is the stage runtime of Stack VPS: it owns consuming from
// Kafka, calling a stage's [Processor], producing its output, dead-lettering
// permanent failures, retrying transient ones, committing offsets, draining on
// shutdown and the metrics every stage shares. It is the only package that
// imports franz-go; stages see [Record] values and narrow interfaces.
//
// Delivery: a record's offset is committed only after every record produced
// for it (outputs and dead letters) was acknowledged by Kafka with acks=all on
// an idempotent producer, so a crash at any point replays rather than loses.
// Downstream stages are idempotent on their natural keys.
//
// The process also serves /metrics, /healthz and /readyz through [Server],
// with readiness decided by the [Health] checks every component registers.
package pipeline
