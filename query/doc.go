// Package query is Stack VPS's HTTP API, mounted at /api on the process's
// HTTP server by the api stage (`stackvps run --stages api`). Its OpenAPI 3
// document is served at GET /api/openapi.json; the router and the document
// are built from one route table (api.go, openapi.go).
//
// # Routes
//
//	GET    /api/openapi.json              this API's OpenAPI document
//	GET    /api/telemetry/data/           readings, or rollups with bucket=1m|1h|1d; paginated
//	GET    /api/telemetry/latest/         newest reading per point and variable
//	POST   /api/telemetry/process/        a provider payload into telemetry.raw (202 after Kafka's ack)
//	GET    /api/users/owners/             owners of a point
//	POST   /api/users/notifications/      set notification preferences for a point
//	GET    /api/points/                   the caller's points
//	POST   /api/points/                   create a point (administrators)
//	GET    /api/points/{code}/            one point, with the caller's permissions
//	PATCH  /api/points/{code}/            change a point (write)
//	DELETE /api/points/{code}/            delete a point without devices (administrators)
//	GET    /api/points/{code}/devices/    a point's devices
//	POST   /api/points/{code}/devices/    add a device (manage_devices)
//	PATCH  /api/devices/{id}/             change or move a device (manage_devices)
//	DELETE /api/devices/{id}/             remove a device (manage_devices)
//
// Paths end with a slash, as the old system's did; the same path without it
// is redirected with 308 (method and body kept).
//
// # Security
//
// Every route needs "Authorization: Token <key>"; anything else is 401 with
// "WWW-Authenticate: Token", whatever the reason (missing, malformed,
// unknown, revoked, expired token, inactive user). Authorization is the
// accounts package's: a point the caller cannot read answers 404 with the
// same body as a point that does not exist, and a device of such a point
// answers as a device that does not exist; 403 means "you can see it but
// may not do this". Every change goes through accounts, which writes
// audit_log in the change's transaction, with the request id (X-Request-Id,
// echoed in the response; an incoming one is kept when it is a plain
// token of at most 100 characters).
//
// # Errors
//
// Every error is JSON {"error": "...", "param": "..."}, param naming the
// query parameter, path parameter, header or body field at fault. Unknown
// and repeated single-valued query parameters are 400 too, so typos do not
// silently widen a query. Database errors are 500 with nothing of the cause
// shown (it is logged with the request id); a timeout is 503.
//
// # Data, formats and pagination
//
// The data endpoints answer JSON by default, CSV (text/csv) or an Arrow IPC
// stream (application/vnd.apache.arrow.stream) by Accept, 406 otherwise.
// Rows are streamed from the database cursor to the client as they are
// read: JSON and CSV through a 32 KiB buffer, Arrow as record batches of
// 8192 rows.
//
// A data page is ordered by the tables' primary key (point, variable,
// time-or-bucket), so a page is one index range scan that stops after
// page_size rows, whatever the number of series or the depth of the page.
// Its cursor is keyset: the key of the page's last row, with a fingerprint
// of the query (points, variables, range, bucket) so that a cursor cannot be
// applied to another query; it is opaque base64url. The page query selects
// page_size+1 rows and a window function gives every row the page's length
// and the key of its last row, so the next link is known before the first
// row is written: it is sent as a Link header (rel="next") in every format,
// and in the body too (JSON "next" and "next_cursor"; Arrow schema metadata).
// Following next links reproduces the whole result exactly: each page is one
// statement, and keyset pagination neither skips nor repeats a row that
// existed when its page was read.
//
// # Limits
//
//   - range of raw data: api.max_range (default 31 days);
//   - range with bucket=1m: 92 days; 1h: 731 days; 1d: 7305 days (each at
//     least api.max_range);
//   - page_size: 1 to api.max_page_size (default 50000), default
//     api.default_page_size (default 1000);
//   - 50 points and 20 variables per data request; 1000 points per latest
//     request (every visible point when none is named);
//   - JSON bodies 64 KiB; ingested payloads 1 MB (Config.MaxPayload);
//   - one data request's database work: Config.QueryTimeout (1 minute).
//
// Queries are parameterized: the only names written into SQL text are the
// table and column names of a fixed map (store.go).
package query
