package regulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The DGA answers' texts. Only the duplicate and wrong-informant messages
// come from real clients' handling; the rest are stubs (UNCONFIRMED).
const (
	msgAccepted        = "Registro exitoso"
	msgDuplicatePrefix = "Ya existe un registro en esa fecha, hora para la obra. Comprobante: "
	msgWrongInformant  = "Usuario no es el informante registrado en la Obra"
	msgBadPassword     = "Credenciales inválidas"
	msgWrongCentre     = "Centro de Control no autorizado para la Obra"
	msgUnregistered    = "Obra no registrada"
	msgRejected        = "Registro rechazado"
	msgNotFound        = "No existe un registro con ese comprobante para la obra"
)

// DGA status codes: "00" success; the others are stubs (UNCONFIRMED).
const (
	statusOK = "00"
	// statusRejected is a business rejection: duplicate, informant, reject.
	statusRejected = "01"
	// statusFormat is a format error, and the body of a 5xx or 429.
	statusFormat = "99"
)

// measurementKind is the DGA endpoint: which measurement object the body
// carries.
type measurementKind struct {
	field    string // body key of the measurement
	hasLevel bool   // carries nivelFreaticoDelPozo
}

var (
	kindSubterranea = measurementKind{field: "medicionSubterranea", hasLevel: true}
	kindFlujometro  = measurementKind{field: "medicionSuperficialFlujometro"}
)

var (
	obraRE      = regexp.MustCompile(`^O[BR]-\d{4}-\d+$`)
	timestampRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[-+]\d{4}$`)
	decimal2RE  = regexp.MustCompile(`^\d+\.\d{2}$`)
	level2RE    = regexp.MustCompile(`^-?\d+\.\d{2}$`)
	integerRE   = regexp.MustCompile(`^\d{1,15}$`)
	rutRE       = regexp.MustCompile(`^(\d{7,8})-([0-9K])$`)
)

// dgaRecord is a stored DGA measurement.
type dgaRecord struct {
	Obra        string  `json:"codigoObra"`
	Endpoint    string  `json:"endpoint"`
	Fecha       string  `json:"fechaMedicion"`
	Hora        string  `json:"horaMedicion"`
	Caudal      *string `json:"caudal"`
	Totalizador string  `json:"totalizador"`
	Nivel       *string `json:"nivelFreaticoDelPozo,omitempty"`
	RutEmpresa  string  `json:"rutEmpresa"`
	RutUsuario  string  `json:"rutUsuario"`
	Receipt     string  `json:"numeroComprobante"`
}

// dgaAnswer is the body of every DGA answer.
type dgaAnswer struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

func dgaError(status string) func(string) any {
	return func(msg string) any { return dgaAnswer{Status: status, Message: msg} }
}

// dgaBody is the body once validated.
type dgaBody struct {
	password, rutEmpresa, rutUsuario string
	rec                              dgaRecord
}

// dgaSubmit handles POST of one measurement.
func (s *Server) dgaSubmit(kind measurementKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		x, body := s.begin(w, r, EndpointDGA)
		obra := r.Header.Get("codigoObra")
		fields, _ := objectFields(body)
		auth, _ := objectFields(fields["autenticacion"])
		meas, _ := objectFields(fields[kind.field])
		fecha, hora := rawString(meas["fechaMedicion"]), rawString(meas["horaMedicion"])
		var keys []string
		key := ""
		if obra != "" && fecha != "" && hora != "" {
			key = DGAKey(obra, fecha, hora)
			keys = []string{key}
		}
		if wait := x.admit(EndpointDGA, "dga", keys, key, rawString(auth["rutEmpresa"])); wait > 0 {
			x.rateLimited(wait, dgaError(statusFormat))
			return
		}
		if x.preFault(dgaError(statusFormat)) {
			return
		}
		b, err := s.validateDGA(r, body, kind)
		if err != nil {
			x.reply(http.StatusBadRequest, "invalid", dgaAnswer{Status: statusFormat, Message: err.Error()}, "")
			return
		}
		if msg := s.checkInformant(obra, b); msg != "" {
			x.reply(http.StatusBadRequest, "rejected", dgaAnswer{Status: statusRejected, Message: msg}, "")
			return
		}
		switch {
		case x.faultIs(FaultWrongInformant):
			x.reply(http.StatusBadRequest, "rejected", dgaAnswer{Status: statusRejected, Message: msgWrongInformant}, "")
			return
		case x.faultIs(FaultReject):
			st, msg := x.fault.Status, x.fault.Message
			if st == 0 {
				st = http.StatusBadRequest
			}
			if msg == "" {
				msg = msgRejected
			}
			x.reply(st, "rejected", dgaAnswer{Status: statusRejected, Message: msg}, "")
			return
		}
		receipt, dup := s.storeDGA(key, b.rec, x.faultIs(FaultDuplicate))
		switch {
		case dup:
			x.reply(http.StatusBadRequest, "duplicate", dgaAnswer{Status: statusRejected, Message: msgDuplicatePrefix + receipt}, receipt)
		case x.faultIs(FaultNoReceipt):
			x.reply(http.StatusOK, "accepted", dgaAnswer{Status: statusOK, Message: msgAccepted}, receipt)
		default:
			x.reply(http.StatusOK, "accepted", dgaAnswer{Status: statusOK, Message: msgAccepted,
				Data: map[string]string{"numeroComprobante": receipt}}, receipt)
		}
	}
}

// storeDGA stores rec under key unless the slot holds a record already. It
// returns the receipt and whether the answer is a duplicate (forced: store
// if needed, then answer as a duplicate).
func (s *Server) storeDGA(key string, rec dgaRecord, forceDup bool) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.slotLocked("dga", key)
	if st.dga != nil {
		st.Duplicates++
		return st.dga.Receipt, true
	}
	rec.Receipt = s.randomLocked(32, alnum)
	for s.receipts[rec.Receipt] != nil {
		rec.Receipt = s.randomLocked(32, alnum)
	}
	st.dga = &rec
	st.Accepted++
	st.Receipts = append(st.Receipts, rec.Receipt)
	st.FirstAcceptedAt = s.now()
	st.Data, _ = json.Marshal(rec)
	s.receipts[rec.Receipt] = &rec
	if forceDup {
		st.Duplicates++
	}
	return rec.Receipt, forceDup
}

// checkInformant checks b's credentials against obra's registration and
// returns the rejection message, if any.
func (s *Server) checkInformant(obra string, b dgaBody) string {
	s.mu.Lock()
	o, ok := s.obras[obra]
	s.mu.Unlock()
	switch {
	case !ok && s.cfg.RequireRegistered:
		return msgUnregistered
	case !ok:
		return ""
	case o.RutEmpresa != "" && o.RutEmpresa != b.rutEmpresa:
		return msgWrongCentre
	case o.RutUsuario != "" && o.RutUsuario != b.rutUsuario:
		return msgWrongInformant
	case o.Password != "" && o.Password != b.password:
		return msgBadPassword
	}
	return ""
}

// validateDGA checks the headers and body strictly; the error names the
// field.
func (s *Server) validateDGA(r *http.Request, body []byte, kind measurementKind) (dgaBody, error) {
	var b dgaBody
	obra := r.Header.Get("codigoObra")
	switch {
	case obra == "":
		return b, fmt.Errorf("codigoObra: cabecera requerida")
	case !obraRE.MatchString(obra):
		return b, fmt.Errorf("codigoObra: formato inválido %q (se espera OB-RRPP-N u OR-RRPP-N)", obra)
	}
	ts := r.Header.Get("timeStampOrigen")
	switch {
	case ts == "":
		return b, fmt.Errorf("timeStampOrigen: cabecera requerida")
	case s.cfg.StrictTimestamp && !timestampRE.MatchString(ts):
		return b, fmt.Errorf("timeStampOrigen: formato inválido %q (se espera yyyy-MM-ddTHH:mm:ss-0000)", ts)
	}
	if body == nil {
		return b, fmt.Errorf("body: vacío o demasiado grande")
	}
	fields, err := objectFields(body)
	if err != nil {
		return b, fmt.Errorf("body: JSON inválido: %w", err)
	}
	if err := exactKeys("body", fields, []string{"autenticacion", kind.field}, nil); err != nil {
		return b, err
	}
	auth, err := objectFields(fields["autenticacion"])
	if err != nil {
		return b, fmt.Errorf("autenticacion: se espera un objeto")
	}
	if err := exactKeys("autenticacion", auth, []string{"password", "rutEmpresa", "rutUsuario"}, nil); err != nil {
		return b, err
	}
	for _, f := range []struct {
		name string
		dst  *string
		rut  bool
	}{{"password", &b.password, false}, {"rutEmpresa", &b.rutEmpresa, true}, {"rutUsuario", &b.rutUsuario, true}} {
		v, err := stringField(f.name, auth[f.name])
		if err != nil {
			return b, err
		}
		if v == "" {
			return b, fmt.Errorf("%s: requerido", f.name)
		}
		if f.rut {
			if err := s.checkRUT(v); err != nil {
				return b, fmt.Errorf("%s: %w", f.name, err)
			}
		}
		*f.dst = v
	}
	meas, err := objectFields(fields[kind.field])
	if err != nil {
		return b, fmt.Errorf("%s: se espera un objeto", kind.field)
	}
	want := []string{"caudal", "fechaMedicion", "horaMedicion", "totalizador"}
	if kind.hasLevel {
		want = append(want, "nivelFreaticoDelPozo")
	}
	if err := exactKeys(kind.field, meas, want, nil); err != nil {
		return b, err
	}
	rec := dgaRecord{Obra: obra, Endpoint: kind.field, RutEmpresa: b.rutEmpresa, RutUsuario: b.rutUsuario}
	if isNull(meas["caudal"]) && s.cfg.AllowNullCaudal {
		rec.Caudal = nil
	} else {
		v, err := stringField("caudal", meas["caudal"])
		if err != nil {
			return b, err
		}
		if !decimal2RE.MatchString(v) {
			return b, fmt.Errorf("caudal: formato inválido %q (se espera un número con exactamente 2 decimales, ej. 15.31)", v)
		}
		rec.Caudal = &v
	}
	if rec.Fecha, err = stringField("fechaMedicion", meas["fechaMedicion"]); err != nil {
		return b, err
	}
	if _, err := time.Parse("2006-01-02", rec.Fecha); err != nil || len(rec.Fecha) != 10 {
		return b, fmt.Errorf("fechaMedicion: formato inválido %q (se espera YYYY-MM-DD)", rec.Fecha)
	}
	if rec.Hora, err = stringField("horaMedicion", meas["horaMedicion"]); err != nil {
		return b, err
	}
	if _, err := time.Parse("15:04:05", rec.Hora); err != nil || len(rec.Hora) != 8 {
		return b, fmt.Errorf("horaMedicion: formato inválido %q (se espera HH:mm:ss)", rec.Hora)
	}
	if rec.Totalizador, err = stringField("totalizador", meas["totalizador"]); err != nil {
		return b, err
	}
	if !integerRE.MatchString(rec.Totalizador) {
		return b, fmt.Errorf("totalizador: formato inválido %q (se espera un entero sin decimales de hasta 15 dígitos)", rec.Totalizador)
	}
	if kind.hasLevel {
		v, err := stringField("nivelFreaticoDelPozo", meas["nivelFreaticoDelPozo"])
		if err != nil {
			return b, err
		}
		if v != "" && !level2RE.MatchString(v) {
			return b, fmt.Errorf("nivelFreaticoDelPozo: formato inválido %q (se espera un número con exactamente 2 decimales, o \"\")", v)
		}
		rec.Nivel = &v
	}
	b.rec = rec
	return b, nil
}

// checkRUT checks the format NNNNNNNN-D and, unless SkipRUTCheck, the
// modulo-11 check digit.
func (s *Server) checkRUT(rut string) error {
	m := rutRE.FindStringSubmatch(strings.ToUpper(rut))
	if m == nil {
		return fmt.Errorf("RUT inválido %q (se espera NNNNNNNN-D, sin puntos)", rut)
	}
	if !s.cfg.SkipRUTCheck && RUTCheckDigit(m[1]) != m[2] {
		return fmt.Errorf("RUT inválido %q (dígito verificador)", rut)
	}
	return nil
}

// RUTCheckDigit returns the modulo-11 check digit ("0"-"9" or "K") of the
// digits of a RUT.
func RUTCheckDigit(digits string) string {
	sum, mul := 0, 2
	for i := len(digits) - 1; i >= 0; i-- {
		sum += int(digits[i]-'0') * mul
		if mul++; mul > 7 {
			mul = 2
		}
	}
	switch r := 11 - sum%11; r {
	case 11:
		return "0"
	case 10:
		return "K"
	default:
		return strconv.Itoa(r)
	}
}

// dgaVerify handles GET ?codigoObra=&numeroComprobante=.
func (s *Server) dgaVerify(w http.ResponseWriter, r *http.Request) {
	x, _ := s.begin(w, r, EndpointDGAVerify)
	q := r.URL.Query()
	obra, receipt := q.Get("codigoObra"), q.Get("numeroComprobante")
	x.admit(EndpointDGAVerify, "", nil, obra+"|"+receipt, "") // no rate limit on verification
	if x.preFault(dgaError(statusFormat)) {
		return
	}
	switch {
	case obra == "":
		x.reply(http.StatusBadRequest, "invalid", dgaAnswer{Status: statusFormat, Message: "codigoObra: parámetro requerido"}, "")
		return
	case receipt == "":
		x.reply(http.StatusBadRequest, "invalid", dgaAnswer{Status: statusFormat, Message: "numeroComprobante: parámetro requerido"}, "")
		return
	}
	s.mu.Lock()
	rec := s.receipts[receipt]
	s.mu.Unlock()
	if rec == nil || rec.Obra != obra {
		x.reply(http.StatusNotFound, "not_found", dgaAnswer{Status: statusRejected, Message: msgNotFound}, "")
		return
	}
	fecha, _ := time.Parse("2006-01-02", rec.Fecha)
	nivel := ""
	if rec.Nivel != nil {
		nivel = *rec.Nivel
	}
	data := map[string]any{
		"fechaMedicion":        fecha.Format("02-01-2006"),
		"horaMedicion":         rec.Hora,
		"caudal":               rec.Caudal,
		"totalizador":          rec.Totalizador,
		"nivelFreaticoDelPozo": nivel,
	}
	x.reply(http.StatusOK, "ok", dgaAnswer{Status: statusOK, Message: "", Data: data}, receipt)
}

// objectFields decodes a JSON object into its fields.
func objectFields(b []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fmt.Errorf("vacío")
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("se espera un objeto")
	}
	return m, nil
}

// exactKeys checks that obj has every key of want, and no other key than
// those of want and optional.
func exactKeys(where string, obj map[string]json.RawMessage, want, optional []string) error {
	for _, k := range want {
		if _, ok := obj[k]; !ok {
			return fmt.Errorf("%s: campo requerido", k)
		}
	}
	var extra []string
	for k := range obj {
		if !slices.Contains(want, k) && !slices.Contains(optional, k) {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return fmt.Errorf("%s: campo desconocido en %s", extra[0], where)
	}
	return nil
}

// stringField decodes a JSON string; anything else names the field.
func stringField(name string, raw json.RawMessage) (string, error) {
	var v string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &v) != nil {
		return "", fmt.Errorf("%s: se espera un texto (string JSON); recibido %s", name, truncate(string(raw), 40))
	}
	return v, nil
}

// rawString is the JSON string raw, or "" when it is not one.
func rawString(raw json.RawMessage) string {
	v, err := stringField("", raw)
	if err != nil {
		return ""
	}
	return v
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
