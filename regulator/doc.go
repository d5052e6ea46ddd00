// Package regulator is a reference regulator: an HTTP server implementing
// the documented contracts of the two Chilean regulators Stack VPS reports
// to, with their failure modes on demand, that counts what it accepted per
// slot. Tests and `make demo` point compliance sources at it (a source's
// endpoint is a full URL: base URL + the real path) and then check that
// every slot was accepted exactly once, whatever faults were injected.
//
// It is written from the domain notes (shared/domain/compliance.md), not from
// package compliance, on purpose: an independent implementation of the
// contract is what makes it a useful test oracle.
//
// # DGA (Monitoreo de Extracciones Efectivas, REST of Manual Técnico 1/2025)
//
//	POST /api/v1/mediciones/subterraneas
//	POST /api/v1/mediciones/superficiales/flujometro
//	GET  /api/v1/mediciones/subterraneas?codigoObra=X&numeroComprobante=Y
//
// A submission needs the headers codigoObra (^O[BR]-\d{4}-\d+$) and
// timeStampOrigen, and the body
//
//	{"autenticacion":{"password","rutEmpresa","rutUsuario"},
//	 "medicionSubterranea":{"caudal","fechaMedicion","horaMedicion","totalizador","nivelFreaticoDelPozo"}}
//
// (medicionSuperficialFlujometro, without nivelFreaticoDelPozo, for the
// flowmeter). Formats are checked strictly: every value is a JSON string;
// caudal has exactly 2 decimals; totalizador is an integer of at most 15
// digits; fechaMedicion is YYYY-MM-DD; horaMedicion HH:mm:ss;
// nivelFreaticoDelPozo has 2 decimals (a sign is allowed) or is ""; RUTs are
// NNNNNNNN-D with a valid modulo-11 check digit; unknown keys are refused. A
// format error answers 400 {"status":"99","message":"<field>: ..."}.
//
// Answers: 200 {"status":"00","message":"Registro exitoso","data":
// {"numeroComprobante":"<32 alphanumerics>"}}; a second submission of the
// same (codigoObra, fechaMedicion, horaMedicion), even to the other DGA
// endpoint, 400 {"status":"01","message":"Ya existe un registro en esa
// fecha, hora para la obra. Comprobante: <original>"}; credentials that do not
// match a registered obra (Config.Obras, RegisterObra, POST /_admin/obras) 400
// {"status":"01","message":"Usuario no es el informante registrado en la
// Obra"}. An obra that is not registered accepts any credentials unless
// Config.RequireRegistered. The verification answers {"status":"00",
// "message":"","data":{"fechaMedicion":"DD-MM-YYYY","horaMedicion",
// "caudal","totalizador","nivelFreaticoDelPozo"}}, or 404 with status "01"
// for an unknown (obra, comprobante).
//
// # SMA (Res. Ex. 254/2020, Manual API REST v1.0)
//
//	POST /api/v1/auth                                        {"usuario","password"} -> {"token"}
//	POST /api/v1/ufs/{uf}/procesos/{proceso}/registros       Authorization: Bearer <token>
//
// A token is valid Config.TokenTTL (24 h). The registros body is
//
//	[{"dispositivoId":"12180","parametros":[{"nombre":"Q","valor":"42.5","unidad":"l/s","estampaTiempo":"2026-05-17T14:05:00"}, ...]}]
//
// and every (dispositivoId, estampaTiempo) must carry exactly the parameters
// of Config.SMAParameters (default Q and VA), each once, or the call answers
// 400 {"mensaje":"..."}; a missing, unknown or expired token answers 401. A
// call is all or nothing: 201 {"mensaje":"ok","IdVerificacion":"..."} with one
// IdVerificacion for the new slots it carries.
//
// # Slots and counts
//
// A DGA slot is "obra|fecha|hora" (DGAKey), an SMA slot
// "uf|proceso|dispositivo|estampaTiempo" (SMAKey). For each the Server
// counts the requests naming it (whatever their answer), its acceptances
// (stored as a new record) and the duplicate answers, and keeps the receipts
// and the stored values: Accepted, Slots, Slot, Violations, and GET
// /_admin/accepted. For DGA a second acceptance is impossible by
// construction (the duplicate rule); what a careless client shows is more
// requests per slot (§6.3 forbids retransmitting what DGA holds). Every
// request is also kept, bounded by Config.MaxRequests, with passwords and
// tokens replaced by "****": Requests and GET /_admin/requests.
//
// # Faults
//
// Faults (see Fault and FaultKind) are set in Config.Faults, with AddFaults
// or with POST /_admin/faults, and removed with ClearFaults or DELETE
// /_admin/faults. Each fires on the next Count matching requests, with a
// Probability drawn from a generator seeded by Config.Seed, or always:
// server errors and 429 before accepting; slow answers and hangs after
// accepting (the data is stored, the client gets a late answer or none);
// token expiry; forced duplicates, wrong informant, business rejections and
// acceptances without a receipt. Independently, Config.MinInterval imposes a
// minimum interval between the submissions of one Centro de Control (DGA
// rutEmpresa, SMA usuario), answering 429 with Retry-After.
//
// # Admin API
//
//	GET    /_admin/healthz         200 "ok"
//	POST   /_admin/faults          body: a Fault or an array of them; appended; answers FaultsReport
//	GET    /_admin/faults          FaultsReport {"faults":[{"id","fault":{...},"fired","remaining"}]}
//	DELETE /_admin/faults          clears them; FaultsReport with "cleared"
//	GET    /_admin/accepted        AcceptedReport {"accepted","requests","slots":[Slot],"violations":[Slot]}
//	GET    /_admin/requests        RequestsReport {"requests":[Request],"dropped","last"}; ?since=SEQ
//	POST   /_admin/reset           forgets slots, requests, tokens, runtime registrations; restores Config.Faults
//	POST   /_admin/obras           body {"OB-0602-7":{"rut_empresa","rut_usuario","password"}}
//	POST   /_admin/sma-users       body {"usuario":"password"}
//	POST   /_admin/tokens/expire   expires every SMA token: {"expired":N}
//
// Admin requests are neither logged nor subject to faults. A Slot in JSON:
//
//	{"api":"dga","key":"OB-0602-7|2026-06-11|13:00:00","requests":2,"accepted":1,"duplicates":1,
//	 "receipts":["ZMmrvqSV12WE5aKz5WJxkCOyu13h5pha"],"first_accepted_at":"...","data":{...}}
//
// # Use
//
// In a Go test:
//
//	reg := regulator.New(regulator.Config{Faults: []regulator.Fault{{Kind: regulator.FaultHang, Count: 1}}})
//	ts := httptest.NewServer(reg.Handler())
//	t.Cleanup(ts.Close)
//	t.Cleanup(reg.Close) // runs first: releases hung requests so ts.Close does not wait for them
//	// point the source's endpoint at ts.URL + "/api/v1/mediciones/subterraneas" (SMA: ts.URL + "/api/v1"), run, then
//	require.Empty(t, reg.Violations()); require.Equal(t, 1, reg.Accepted()["OB-0602-7|2026-06-11|13:00:00"])
//
// From the command line (make demo, process tests), `stackvps regulator
// --listen :9100 --faults '{"kind":"server_error","count":2}'` prints its
// base URL and serves until SIGTERM; the admin API changes faults at run
// time (curl -X POST localhost:9100/_admin/faults -d '{"kind":"hang","count":1}').
//
// # What is UNCONFIRMED
//
// The real regulators' behaviour is only partly documented; this package
// models these points by choice, and a test passing against it proves
// conformance to the model, not to the regulator:
//   - DGA status codes other than "00", and every message except the
//     duplicate and wrong-informant ones, are stubs.
//   - DGA strictness: SNIA may accept "42.5" for caudal or an unknown
//     timeStampOrigen format (one production client sends both and gets 200s).
//     The model is strict on values (the manual's formats) and lenient on
//     timeStampOrigen unless Config.StrictTimestamp. Whether caudal may be
//     null is unknown (Config.AllowNullCaudal), as is the refusal of unknown
//     keys and of wrong check digits (Config.SkipRUTCheck).
//   - What DGA answers for a wrong password, a wrong Centro de Control or an
//     unregistered obra is unknown; the model answers 400 status "01" with
//     its own messages.
//   - The GET verification's DD-MM-YYYY date comes from one client only.
//   - DGA rate limits are not published; MinInterval is off by default.
//   - SMA duplicate behaviour is UNCONFIRMED. By default a repeated (uf,
//     proceso, dispositivo, estampaTiempo) is idempotent acceptance: 200 with
//     the original IdVerificacion and no new acceptance
//     (Config.SMADuplicates offers "accept" and "reject" too).
//   - SMA parameter names, units and the IdVerificacion format come from one
//     implementation (the manual's annexes were not available); units are not
//     checked. The 403 of a forced wrong informant is the model's choice.
package regulator
