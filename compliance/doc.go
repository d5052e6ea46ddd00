// Package compliance is the domain of reporting water extraction to Chile's
// regulators, DGA (Monitoreo de Extracciones Efectivas) and SMA (conexión en
// línea, Res. Ex. 254/2020): the sources, the per-point params, sealed
// credentials, the slot schedule, the formatting of values and the protocol
// clients that send one slot and classify the answer. It holds no database
// code (compliance/store does) and no loop (the submit stage does).
//
// # Model
//
// A [Source] is one regulator endpoint (a compliance_sources row): the
// protocol that talks to it, its URL, the time zone its dates are written
// in, the canonical variables it takes (flow L/s, totalizer m3, level m),
// the JSON Schema every request body must satisfy, protocol settings, and
// how fast and how often it may be called. [Sources] returns the built-in
// sources merged with compliance.sources of the configuration: an entry for
// a built-in code overrides only the keys it gives (tests, demos and staging
// point DGA's endpoint at the reference regulator this way), and an entry
// for a new code defines a source that speaks an existing protocol, so a
// regulator endpoint with the same HTTP-JSON shape is configuration, not
// code.
//
// [Params] are one compliance config (compliance_configs.config): DGA's
// codigo_obra and RUTs, or SMA's UF, proceso and dispositivo ids, the DGA
// standard and the frequency and value mode. [Credentials] are sealed at
// rest with a [Sealer] (AES-256-GCM, key compliance.credentials_key; the
// value is a version byte, a random nonce and the ciphertext) and never
// print: String, GoString, slog and JSON show the password as "****".
//
// A slot is an instant ([SlotsBetween], [IsSlot]): hourly at minute 0,
// daily at the first instant of the local day, monthly on day 1, semiannual
// on 1 January and 1 July, all in the source's zone. In a zone with DST the
// spring-forward hour has no slot and the fall-back hour has two (two
// instants with the same wall clock). A [Slot] carries the values to report.
//
// A [Protocol] turns a slot into a [Request] (Prepare: format, validate
// against the schema; an error wrapping [ErrInvalid] means the slot is
// rejected locally with that reason, naming the field, and never sent) and
// sends it (Send), classifying the answer into an [Outcome]: confirmed (with
// the receipt, or without one and a reason asking for review), rejected
// (retry after RetryRejectedAfter), rejected_terminal, unknown (the request
// was written but no answer came: the data may have arrived, do not blindly
// resend), transient (not sent, or 5xx), rate_limited (with RetryAfter).
// Protocols do not throttle: honouring MinInterval is the submitter's job.
// dga-mee also implements [Verifier] (GET ?codigoObra=&numeroComprobante=).
// Every protocol is safe for concurrent use.
//
// # Built-in sources and defaults
//
//	code                          protocol       zone              variables               retry  attempts
//	dga-subterraneas              dga-mee        Etc/GMT+4         flow, totalizer, level  24h    7
//	dga-superficiales-flujometro  dga-mee        Etc/GMT+4         flow, totalizer         24h    7
//	sma                           sma-registros  America/Santiago  flow, totalizer         1h     7
//
// Endpoints: https://apimee.mop.gob.cl/api/v1/mediciones/subterraneas and
// …/mediciones/superficiales/flujometro (body keys medicionSubterranea and
// medicionSuperficialFlujometro), and https://conexiones.sma.gob.cl/api/v1
// (POST /auth, POST /ufs/{uf}/procesos/{proceso}/registros). All: 1 s
// between requests, a 15 s request timeout. The request schemas are
// embedded from schemas/*.json: DGA caudal ^-?\d+\.\d{2}$ (or null),
// totalizador ^\d{1,15}$, nivelFreaticoDelPozo two decimals or "",
// fechaMedicion a date, horaMedicion HH:mm:ss, RUTs ^\d{1,8}-[\dK]$.
//
// Formatting: numbers are strings with '.' and no thousands separator,
// flow and level with two decimals ("15.31"), the totalizer a truncated
// integer of at most 15 digits; negative, NaN and infinite values are
// ErrInvalid, as is a missing variable the source requires. DGA's
// fechaMedicion (YYYY-MM-DD) and horaMedicion (HH:mm:ss) are the slot
// instant in the source's zone; SMA's estampaTiempo is the slot instant in
// the source's zone without offset (yyyy-MM-ddTHH:mm:ss).
//
// Outcomes, dga-mee: HTTP 2xx with status "00" and data.numeroComprobante
// is confirmed with it; "00" without it is confirmed, empty receipt, needs
// review (never resend); a "Ya existe … Comprobante: X" message is
// confirmed with X (regexp /comprobante:\s*([A-Za-z0-9]+)/i); "Usuario no
// es el informante" is rejected_terminal; any other status or 4xx is
// rejected; 429 is rate_limited; 5xx is transient; a failure before the
// request was written is transient, after it unknown. sma-registros: the
// token is cached per (source, endpoint, username) for token_ttl (24h)
// minus token_margin (10m), or until a JWT's exp, and renewed once on a
// 401; 200/201 is confirmed with IdVerificacion (or empty, needs review),
// 400 rejected, 401 after the renewal and 403 rejected_terminal, 429
// rate_limited, 5xx transient, a timeout after the write unknown; an auth
// refusal is rejected_terminal and nothing is posted.
//
// # Settings (Source.Settings, JSON; compliance.sources.<code>.settings)
//
// dga-mee ([DGASettings]): body_key; time_stamp_origen emeltec3 (default:
// the time of sending in the source's zone written yyyy-MM-ddTHH:mm:ss-0000)
// | measurement_local (the slot, no offset, as SmartHydro) | offset (the
// time of sending with its real offset); decimals (2); totalizer truncate
// (default) | round; missing_flow invalid (default) | null (send caudal
// null, as emeltec3); empty_level (send nivelFreaticoDelPozo "" when the
// level is absent; true for dga-subterraneas); verify_endpoint (default the
// endpoint). sma-registros ([SMASettings]): parameters ([{variable, nombre,
// unidad}], default flow -> Q l/s, totalizer -> VA m3), decimals (2),
// totalizer, auth_path ("/auth"), token_ttl ("24h"), token_margin ("10m").
//
// # UNCONFIRMED
//
// No primary text of Manual Técnico DGA 1/2025 or of the annexes of SMA's
// Res. 254 was available; these defaults follow the reference client
// implementations (see ../shared/domain/compliance.md) and are
// configurable:
//   - DGA's time zone Etc/GMT+4 (fixed UTC-4; other clients use
//     America/Santiago) and SMA's America/Santiago. In America/Santiago the
//     fall-back repeats a wall-clock hour, which DGA would answer as a
//     duplicate and SMA would see as the same estampaTiempo.
//   - The timeStampOrigen style, the strictness of number formats (two
//     decimals), whether caudal null and nivelFreaticoDelPozo "" are
//     accepted and for which obras, the level's sign convention.
//   - DGA status codes other than "00" and all message texts but the
//     duplicate and informant ones; the GET verification and its
//     DD-MM-YYYY fechaMedicion.
//   - The mapping of DGA standards to frequencies (mayor and sin_estandar
//     hourly, medio daily, menor monthly, muy_pequenos semiannual;
//     [StandardFrequency]); a config may set frequency explicitly.
//   - Rate limits (1 s between requests, 15 s timeout), the daily retry of
//     rejections and 7 attempts (emeltec3's reading of §6.2); SMA's 1 h retry.
//   - SMA's parameter codes and units (Q l/s, VA m3), the shape of its answer
//     (IdVerificacion, mensaje) and the 24 h token life.
package compliance
