// Package aggregate is the telemetry.readings -> compliance.records stage:
// event-time windows of one hour per catchment point, closed by per-device
// watermarks, each emitted as one compliance-ready record (source "hourly")
// whose values come from the one-minute bucket at the slot instant or from
// the hour's mean, with corrections for late readings and deterministic
// re-emission after a crash. One-minute windows are not emitted: the
// readings_1m rollups serve dashboards.
//
// # Windows
//
// Every reading belongs to the hour [S, E) of its event time. The window of
// (point, hour) keeps its readings of every variable, deduplicated on
// (variable, time): a second reading of the same variable at the same
// instant is counted once, and the first one consumed wins, as in the
// readings table. From them come, per variable, count, min, max, avg and
// last, and for the totalizer the hour's delta (below); they travel as JSON
// in header "hour-stats" of each record (see HourStats).
//
// The slot instant of the hour [S, E) is E, the start of the next hour: the
// record of [13:00, 14:00) reports the values measured at 14:00, the DGA
// slot "14:00:00", and its totalizer is the counter at the end of the
// period. The value at the slot instant is the earliest reading in the
// one-minute bucket [E, E+1m) - an exact match on that bucket, never an
// approximation. When the bucket has no reading of a variable the field is
// null: nothing is fabricated. With aggregate.value_mode "mean", flow and
// level are the hour's means instead; the totalizer is always the slot
// instant's.
//
// The totalizer delta sums, in time order, the increments between
// consecutive readings of the hour and the reading at the slot instant, so
// consecutive hours add up. A reading flagged reset (quality bit 8), or a
// drop without the rollover flag, restarts the count from the new value: the
// step adds nothing. A drop flagged rollover (bit 4) adds the counter's run
// to its maximum plus the new value when the provider's maximum is known
// (Deps.TotalizerRollover), nothing otherwise.
//
// Completeness: expected is the number of aggregate.expected_interval slots
// that start in the hour (60 for 1m; rounded up when the interval does not
// divide the hour); received is the number of those slots holding at least
// one flow, totalizer or level reading, so received <= expected.
//
// # Watermarks
//
// A watermark is kept per device (per point and device id): the latest event
// time of the readings accepted from it. A window closes when every device
// of its point has passed E+1m (the slot bucket is complete), so a device
// with a fast clock closes nothing early, and a device uploading its backlog
// delays only its own point's windows, never another point's. A reading
// stamped more than aggregate.clock_skew after it was received (received_at,
// or the stage's clock if earlier) is quarantined: dead-lettered with reason
// clock_skew, and it moves no watermark.
//
// A device that sent nothing for aggregate.idle_timeout is idle. An idle
// device holds no window back while another device of its point is active;
// when every device of a point is idle, its windows close once the idle
// clock passes their E+1m by idle_timeout (a point that fell silent has its
// last hour emitted idle_timeout after it ends). The idle clock is the
// partition's arrival clock (the latest received_at consumed) and, once the
// partition returned nothing for 10s (caught up), the processing time: a
// stage catching up on a backlog never mistakes its lag for silence.
//
// # Lateness and corrections
//
// A closed window stays in memory until allowed_lateness after E+1m on the
// partition's arrival clock (its deadline); a device still behind at the
// deadline is passed over. A reading that arrives for a window already
// emitted is late: it is added, counted (late_readings_total{outcome=
// "corrected"}), and the window is re-emitted at the next flush as a
// correction with a higher version (corrections_total); several late
// readings between two flushes make one correction. A reading that arrives
// after its window's deadline cannot be added exactly any more (the readings
// it would be merged with were released): it is dead-lettered with reason
// too_late, counted (late_readings_total{outcome="too_late"}), and stays
// replayable in telemetry.readings.dlq; the readings table has it, and final
// figures come from there. Raise allowed_lateness to cover the longest
// outage after which devices upload their backlog: memory and the replay
// after a crash grow with it.
//
// # Versions, idempotency and crashes
//
// A record's version is the number of distinct readings it reflects (the
// hour's readings plus the slot readings it uses). It grows with every
// correction, by the readings the correction adds. Versions are not 1, 2, 3
// because a sequence number cannot survive a kill -9 without a store: when a
// window is emitted depends on processing time (idleness, poll boundaries),
// so a replay may emit it at different moments; a count of readings depends
// only on which readings it reflects. emitted_at is likewise derived, not
// read from a clock: it is the latest received_at of those readings. The
// record is keyed point|hourly, so every version of a (point, source,
// period) lands in one partition, in emission order.
//
// Offsets are held (pipeline.OffsetHolder) at the latest record high (a
// record whose received_at is at least every earlier one's) at or before the
// first record of every open window. After a crash or a rebalance the next
// owner consumes again from there: every open window is rebuilt whole, and
// the arrival clock (hence every accept/too_late decision) is rebuilt
// exactly. Readings are accepted into a window by a rule that depends only
// on the record sequence (arrival clock <= deadline), so the set of readings
// a window ever reflects is the same in every run.
//
// What a consumer can rely on, reading compliance.records in order and
// keeping per (point, source, period_start) the record of highest version:
//   - It sees every hour with accepted readings at least once, whatever
//     crashes, restarts or rebalances happen (nothing is lost).
//   - The highest version it ever sees is the aggregation of every reading
//     accepted for the hour, and any record with that version is byte for
//     byte the same (a re-emission after a replay is a duplicate).
//   - A record whose version is not higher than the one it holds is stale or
//     a duplicate and must be skipped. After a restart, a window released
//     shortly before the crash whose readings straddle the held offset can
//     be re-emitted from part of its readings: such a record always has a
//     lower version than the complete one already on the topic.
//
// Processing time (idleness, poll boundaries) decides only when a window is
// emitted, never what a version contains. The guarantees hold as long as
// every reading carries received_at (the bridge sets it; a missing one is
// taken from the stage's clock) and the bridge's clock is not ahead of the
// stage's (the clock-skew check measures from the earlier of the two), and
// the configuration is unchanged between runs (lateness, value mode and
// interval change what a version holds).
//
// Records are emitted by Flush only, never by Process; corrections of one
// window between two flushes coalesce into one record.
package aggregate
