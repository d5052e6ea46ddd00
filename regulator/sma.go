package regulator

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// smaAnswer is the body of SMA errors and acceptances.
type smaAnswer struct {
	Mensaje        string `json:"mensaje"`
	IDVerificacion string `json:"IdVerificacion,omitempty"`
}

func smaError(msg string) any { return smaAnswer{Mensaje: msg} }

// smaAuth handles POST /api/v1/auth {"usuario","password"} -> {"token"}.
func (s *Server) smaAuth(w http.ResponseWriter, r *http.Request) {
	x, body := s.begin(w, r, EndpointSMAAuth)
	fields, ferr := objectFields(body)
	usuario := rawString(fields["usuario"])
	x.admit(EndpointSMAAuth, "", nil, usuario, "") // no rate limit on auth
	if x.preFault(smaError) {
		return
	}
	if ferr != nil {
		x.reply(http.StatusBadRequest, "invalid", smaError("body: se espera un objeto JSON {usuario, password}"), "")
		return
	}
	if err := exactKeys("body", fields, []string{"usuario", "password"}, nil); err != nil {
		x.reply(http.StatusBadRequest, "invalid", smaError(err.Error()), "")
		return
	}
	var vals [2]string
	for i, name := range []string{"usuario", "password"} {
		v, err := stringField(name, fields[name])
		if err == nil && v == "" {
			err = fmt.Errorf("%s: requerido", name)
		}
		if err != nil {
			x.reply(http.StatusBadRequest, "invalid", smaError(err.Error()), "")
			return
		}
		vals[i] = v
	}
	s.mu.Lock()
	pw, known := s.smaUsers[vals[0]]
	if len(s.smaUsers) > 0 && (!known || pw != vals[1]) {
		s.mu.Unlock()
		x.reply(http.StatusUnauthorized, "unauthorized", smaError("credenciales inválidas"), "")
		return
	}
	now := s.now()
	exp := now.Add(s.cfg.TokenTTL)
	claims, _ := json.Marshal(map[string]any{"sub": vals[0], "iat": now.Unix(), "exp": exp.Unix(), "jti": s.randomLocked(16, alnum)})
	tok := "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + base64.RawURLEncoding.EncodeToString(claims) + "." +
		s.randomLocked(43, alnum+"-_")
	s.tokens[tok] = token{usuario: vals[0], expires: exp}
	s.mu.Unlock()
	x.reply(http.StatusOK, "ok", map[string]string{"token": tok}, "")
}

// smaParam is one validated parameter.
type smaParam struct {
	Nombre string `json:"nombre"`
	Valor  string `json:"valor"`
	Unidad string `json:"unidad"`
}

// smaRecord is one validated slot of a call.
type smaRecord struct {
	key         string
	Dispositivo string     `json:"dispositivoId"`
	Estampa     string     `json:"estampaTiempo"`
	Parametros  []smaParam `json:"parametros"`
}

// smaSubmit handles POST /api/v1/ufs/{uf}/procesos/{proceso}/registros.
func (s *Server) smaSubmit(w http.ResponseWriter, r *http.Request) {
	x, body := s.begin(w, r, EndpointSMA)
	uf, proceso := r.PathValue("uf"), r.PathValue("proceso")
	tok, hasBearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	keys := smaKeysLenient(uf, proceso, body)
	s.mu.Lock()
	t, known := s.tokens[tok]
	s.mu.Unlock()
	centre := ""
	if hasBearer && known {
		centre = t.usuario
	}
	if wait := x.admit(EndpointSMA, "sma", keys, strings.Join(keys, ","), centre); wait > 0 {
		x.rateLimited(wait, smaError)
		return
	}
	if x.preFault(smaError) {
		return
	}
	s.mu.Lock()
	t, known = s.tokens[tok]
	valid := hasBearer && tok != "" && known && s.now().Before(t.expires)
	s.mu.Unlock()
	if !valid {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		x.reply(http.StatusUnauthorized, "unauthorized", smaError("token inválido, ausente o expirado"), "")
		return
	}
	recs, err := s.validateSMA(uf, proceso, body)
	if err != nil {
		x.reply(http.StatusBadRequest, "invalid", smaError(err.Error()), "")
		return
	}
	switch {
	case x.faultIs(FaultWrongInformant):
		x.reply(http.StatusForbidden, "rejected", smaError("usuario no autorizado para la unidad fiscalizable"), "")
		return
	case x.faultIs(FaultReject):
		st, msg := x.fault.Status, x.fault.Message
		if st == 0 {
			st = http.StatusBadRequest
		}
		if msg == "" {
			msg = msgRejected
		}
		x.reply(st, "rejected", smaError(msg), "")
		return
	}
	id, status, outcome := s.storeSMA(recs, x.faultIs(FaultDuplicate))
	switch {
	case status == http.StatusBadRequest:
		x.reply(status, outcome, smaError("registro duplicado: "+id), "")
	case x.faultIs(FaultNoReceipt) && status == http.StatusCreated:
		x.reply(status, outcome, smaAnswer{Mensaje: "ok"}, id)
	default:
		x.reply(status, outcome, smaAnswer{Mensaje: "ok", IDVerificacion: id}, id)
	}
}

// storeSMA stores the new slots of one call under one IdVerificacion. It
// returns the IdVerificacion answered, the HTTP status (201 when something
// new was stored, 200 when the whole call was known, 400 in reject mode) and
// the outcome.
func (s *Server) storeSMA(recs []smaRecord, forceDup bool) (string, int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mode := s.cfg.SMADuplicates
	if mode == DuplicateReject && !forceDup {
		var dups []string
		for _, rec := range recs {
			if st := s.slotLocked("sma", rec.key); st.Accepted > 0 {
				st.Duplicates++
				dups = append(dups, rec.key)
			}
		}
		if len(dups) > 0 {
			return strings.Join(dups, ","), http.StatusBadRequest, "duplicate"
		}
	}
	const hex = "0123456789abcdef"
	id := s.randomLocked(8, hex) + "-" + s.randomLocked(4, hex) + "-" + s.randomLocked(4, hex) + "-" +
		s.randomLocked(4, hex) + "-" + s.randomLocked(12, hex)
	stored, original := false, ""
	for _, rec := range recs {
		st := s.slotLocked("sma", rec.key)
		if st.Accepted > 0 && mode != DuplicateAccept {
			st.Duplicates++
			if original == "" {
				original = st.Receipts[0]
			}
			continue
		}
		st.Accepted++
		st.Receipts = append(st.Receipts, id)
		if st.Accepted == 1 {
			st.FirstAcceptedAt = s.now()
			st.Data, _ = json.Marshal(rec)
		}
		if forceDup {
			st.Duplicates++
		}
		stored = true
	}
	switch {
	case stored && !forceDup:
		return id, http.StatusCreated, "accepted"
	case stored:
		return id, http.StatusOK, "duplicate"
	default:
		return original, http.StatusOK, "duplicate"
	}
}

// smaKeysLenient extracts the slot keys of a body, as far as it can.
func smaKeysLenient(uf, proceso string, body []byte) []string {
	var devs []struct {
		Dispositivo any `json:"dispositivoId"`
		Parametros  []struct {
			Estampa any `json:"estampaTiempo"`
		} `json:"parametros"`
	}
	if json.Unmarshal(body, &devs) != nil {
		return nil
	}
	var keys []string
	for _, d := range devs {
		dev := fmt.Sprint(d.Dispositivo)
		if d.Dispositivo == nil {
			continue
		}
		for _, p := range d.Parametros {
			if est, ok := p.Estampa.(string); ok && est != "" {
				if k := SMAKey(uf, proceso, dev, est); !slices.Contains(keys, k) {
					keys = append(keys, k)
				}
			}
		}
	}
	return keys
}

// validateSMA checks a registros body strictly; the error names the field.
// Every (dispositivoId, estampaTiempo) must carry exactly the configured
// parameters, each once.
func (s *Server) validateSMA(uf, proceso string, body []byte) ([]smaRecord, error) {
	var devs []json.RawMessage
	if err := json.Unmarshal(body, &devs); err != nil || len(devs) == 0 {
		return nil, fmt.Errorf("body: se espera un arreglo JSON no vacío de dispositivos")
	}
	byKey := map[string]*smaRecord{}
	var order []string
	for i, raw := range devs {
		where := fmt.Sprintf("[%d]", i)
		dev, err := objectFields(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: se espera un objeto {dispositivoId, parametros}", where)
		}
		if err := exactKeys(where, dev, []string{"dispositivoId", "parametros"}, nil); err != nil {
			return nil, fmt.Errorf("%s.%w", where, err)
		}
		id, err := stringField("dispositivoId", dev["dispositivoId"])
		if err == nil && id == "" {
			err = fmt.Errorf("dispositivoId: requerido")
		}
		if err != nil {
			return nil, fmt.Errorf("%s.%w", where, err)
		}
		var params []json.RawMessage
		if json.Unmarshal(dev["parametros"], &params) != nil || len(params) == 0 {
			return nil, fmt.Errorf("%s.parametros: se espera un arreglo no vacío", where)
		}
		for j, praw := range params {
			pw := fmt.Sprintf("%s.parametros[%d]", where, j)
			p, err := objectFields(praw)
			if err != nil {
				return nil, fmt.Errorf("%s: se espera un objeto {nombre, valor, unidad, estampaTiempo}", pw)
			}
			if err := exactKeys(pw, p, []string{"nombre", "valor", "unidad", "estampaTiempo"}, nil); err != nil {
				return nil, fmt.Errorf("%s.%w", pw, err)
			}
			var vals [4]string
			for k, name := range []string{"nombre", "valor", "unidad", "estampaTiempo"} {
				v, err := stringField(name, p[name])
				if err == nil && v == "" {
					err = fmt.Errorf("%s: requerido", name)
				}
				if err != nil {
					return nil, fmt.Errorf("%s.%w", pw, err)
				}
				vals[k] = v
			}
			if f, err := strconv.ParseFloat(vals[1], 64); err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, fmt.Errorf("%s.valor: se espera un número en texto; recibido %q", pw, vals[1])
			}
			if _, err := time.Parse("2006-01-02T15:04:05", vals[3]); err != nil || len(vals[3]) != 19 {
				return nil, fmt.Errorf("%s.estampaTiempo: formato inválido %q (se espera YYYY-MM-DDTHH:mm:ss, hora local sin zona)", pw, vals[3])
			}
			if !slices.Contains(s.cfg.SMAParameters, vals[0]) {
				return nil, fmt.Errorf("%s.nombre: parámetro %q no esperado (se esperan %s)", pw, vals[0], strings.Join(s.cfg.SMAParameters, ", "))
			}
			key := SMAKey(uf, proceso, id, vals[3])
			rec := byKey[key]
			if rec == nil {
				rec = &smaRecord{key: key, Dispositivo: id, Estampa: vals[3]}
				byKey[key] = rec
				order = append(order, key)
			}
			for _, q := range rec.Parametros {
				if q.Nombre == vals[0] {
					return nil, fmt.Errorf("%s.nombre: parámetro %q repetido para el dispositivo %s en %s", pw, vals[0], id, vals[3])
				}
			}
			rec.Parametros = append(rec.Parametros, smaParam{Nombre: vals[0], Valor: vals[1], Unidad: vals[2]})
		}
	}
	out := make([]smaRecord, 0, len(order))
	for _, key := range order {
		rec := byKey[key]
		var missing []string
		for _, want := range s.cfg.SMAParameters {
			if !slices.ContainsFunc(rec.Parametros, func(p smaParam) bool { return p.Nombre == want }) {
				missing = append(missing, want)
			}
		}
		if len(missing) > 0 {
			sort.Strings(missing)
			return nil, fmt.Errorf("parametros: falta %s para el dispositivo %s en %s (todos los parámetros de una estampa van en una llamada)",
				strings.Join(missing, ", "), rec.Dispositivo, rec.Estampa)
		}
		out = append(out, *rec)
	}
	return out, nil
}
