package compliance

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sma speaks sma-registros (Res. Ex. SMA 254/2020): a JWT from
// POST {endpoint}/auth, cached per (source, endpoint, username) until its
// life minus a margin and renewed once on a 401, then POST
// {endpoint}/ufs/{uf}/procesos/{proceso}/registros with every parameter of
// one timestamp in one call. Safe for concurrent use; concurrent sends with
// the same credentials share one token request.
type sma struct {
	client  *http.Client
	now     func() time.Time
	schemas schemaCache
	locs    locations

	mu     sync.Mutex
	tokens map[string]*smaToken
}

// smaToken is one cached token; mu serialises fetching it.
type smaToken struct {
	mu      sync.Mutex
	token   string
	expires time.Time
}

func newSMA(client *http.Client, now func() time.Time) *sma {
	return &sma{client: client, now: now, tokens: map[string]*smaToken{}}
}

type smaParam struct {
	Name  string `json:"nombre"`
	Value string `json:"valor"`
	Unit  string `json:"unidad"`
	Stamp string `json:"estampaTiempo"`
}

type smaRecord struct {
	Device string     `json:"dispositivoId"`
	Params []smaParam `json:"parametros"`
}

// Prepare builds the POST of one slot: one record for the config's device
// with one parameter per variable the source takes, all stamped with the
// slot instant in the source's zone without offset. The bearer token is
// added by Send, so Header and Redacted hold no secret.
func (p *sma) Prepare(_ context.Context, src Source, slot Slot, _ time.Time) (Request, error) {
	st, err := src.SMASettings()
	if err != nil {
		return Request{}, fmt.Errorf("source %s: %w", src.Code, err)
	}
	loc, params, err := p.locs.forSlot(src, slot)
	if err != nil {
		return Request{}, err
	}
	if slot.Credentials.Username == "" || slot.Credentials.Password == "" {
		return Request{}, invalidf("credentials: SMA needs a username and a password")
	}
	stamp := FormatLocal(slot.At, loc)
	rec := smaRecord{Device: params.Device}
	for _, v := range src.Variables {
		prm, _ := st.parameter(v)
		val := slot.Values.get(v)
		if val == nil {
			return Request{}, invalidf("%s (%s): no %s value for the slot", prm.Name, v, v)
		}
		var s string
		if v == VarTotalizer {
			s, err = FormatTotalizer(prm.Name, *val, st.Totalizer)
		} else {
			s, err = FormatDecimal(prm.Name, *val, st.Decimals)
		}
		if err != nil {
			return Request{}, err
		}
		rec.Params = append(rec.Params, smaParam{Name: prm.Name, Value: s, Unit: prm.Unit, Stamp: stamp})
	}
	body, err := json.Marshal([]smaRecord{rec})
	if err != nil {
		return Request{}, fmt.Errorf("encoding the body: %w", err)
	}
	if err := p.schemas.validateBody(src, body); err != nil {
		return Request{}, err
	}
	u := strings.TrimRight(src.Endpoint, "/") + "/ufs/" + url.PathEscape(params.UF) +
		"/procesos/" + url.PathEscape(params.Process) + "/registros"
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	return Request{Method: http.MethodPost, URL: u, Header: h, Body: body, Redacted: body}, nil
}

func (v Values) get(variable string) *float64 {
	switch variable {
	case VarFlow:
		return v.Flow
	case VarTotalizer:
		return v.Totalizer
	case VarLevel:
		return v.Level
	}
	return nil
}

// Send gets a token (cached), posts req with it and classifies the answer;
// on a 401 it renews the token once and posts again.
func (p *sma) Send(ctx context.Context, src Source, slot Slot, req Request) Outcome {
	start := time.Now()
	o := p.send(ctx, src, slot, req)
	o.Duration = time.Since(start)
	return o
}

func (p *sma) send(ctx context.Context, src Source, slot Slot, req Request) Outcome {
	st, err := src.SMASettings()
	if err != nil {
		return Outcome{Kind: Transient, Reason: fmt.Sprintf("source %s: %v", src.Code, err)}
	}
	entry := p.entry(src, slot.Credentials.Username)
	var stale string
	for try := 0; ; try++ {
		token, o, ok := p.token(ctx, src, st, slot.Credentials, entry, stale)
		if !ok {
			return o
		}
		h := req.Header.Clone()
		if h == nil {
			h = http.Header{}
		}
		h.Set("Authorization", "Bearer "+token)
		ex := do(ctx, p.client, src.RequestTimeout, req.Method, req.URL, h, req.Body)
		if ex.err != nil {
			return failure(ex)
		}
		if ex.status == http.StatusUnauthorized && try == 0 {
			stale = token
			continue
		}
		return ClassifySMA(ex.status, ex.header, ex.body, p.now())
	}
}

func (p *sma) entry(src Source, username string) *smaToken {
	key := src.Code + "\x00" + src.Endpoint + "\x00" + username
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.tokens[key]
	if !ok {
		e = &smaToken{}
		p.tokens[key] = e
	}
	return e
}

// token returns a valid token for the credentials, fetching one when none
// is cached, the cached one expired, or it is stale (the one a 401 just
// refused). ok false means the outcome o is final.
func (p *sma) token(ctx context.Context, src Source, st SMASettings, c Credentials, e *smaToken, stale string) (string, Outcome, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := p.now()
	if e.token != "" && e.token != stale && now.Before(e.expires) {
		return e.token, Outcome{}, true
	}
	e.token = ""
	body, err := json.Marshal(map[string]string{"usuario": c.Username, "password": c.Password})
	if err != nil {
		return "", Outcome{Kind: Transient, Reason: "encoding the auth body: " + err.Error()}, false
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	u := strings.TrimRight(src.Endpoint, "/") + st.AuthPath
	ex := do(ctx, p.client, src.RequestTimeout, http.MethodPost, u, h, body)
	if ex.err != nil {
		// No data was sent yet: whatever happened to the token request,
		// retrying is safe.
		return "", Outcome{Kind: Transient, Reason: "SMA auth: " + ex.err.Error()}, false
	}
	o := Outcome{HTTPStatus: ex.status, Response: ex.body}
	switch {
	case ex.status == http.StatusTooManyRequests:
		o.Kind, o.RetryAfter, o.Reason = RateLimited, retryAfter(ex.header, now), "SMA auth answered 429"
		return "", o, false
	case ex.status >= 500:
		o.Kind, o.Reason = Transient, fmt.Sprintf("SMA auth answered HTTP %d: %s", ex.status, snippet(ex.body))
		return "", o, false
	case ex.status/100 != 2:
		o.Kind, o.Reason = RejectedTerminal, fmt.Sprintf("SMA auth refused the credentials: HTTP %d: %s", ex.status, snippet(ex.body))
		return "", o, false
	}
	var r struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(ex.body, &r); err != nil || r.Token == "" {
		o.Kind, o.Reason = Transient, "SMA auth answered without a token: "+snippet(ex.body)
		return "", o, false
	}
	ttl, margin, _ := st.tokenLife()
	exp := now.Add(ttl)
	if jwtExp, ok := jwtExpiry(r.Token); ok && jwtExp.Before(exp) {
		exp = jwtExp
	}
	e.token, e.expires = r.Token, exp.Add(-margin)
	return e.token, Outcome{}, true
}

// jwtExpiry reads the exp claim of a JWT, when the token is one.
func jwtExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var c struct {
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(b, &c) != nil || c.Exp == nil {
		return time.Time{}, false
	}
	return time.Unix(int64(*c.Exp), 0), true
}

// ClassifySMA classifies one answer of an sma-registros POST (after the
// one token renewal): 200/201 confirmed with the receipt from
// IdVerificacion (without it: confirmed, empty receipt, a reason asking for
// review); 400 rejected with SMA's mensaje; 401 (after renewal) and 403
// rejected_terminal (credentials or ids not accepted); 429 rate_limited;
// 5xx transient; any other status rejected.
func ClassifySMA(status int, header http.Header, body []byte, now time.Time) Outcome {
	o := Outcome{HTTPStatus: status, Response: body}
	// The body may be anything; only known keys of an object (or of the
	// first object of an array) matter.
	var r map[string]any
	if json.Unmarshal(body, &r) != nil {
		var list []map[string]any
		if json.Unmarshal(body, &list) == nil && len(list) > 0 {
			r = list[0]
		}
	}
	msg := firstString(r, "mensaje", "message", "Mensaje")
	if msg == "" {
		msg = snippet(body)
	}
	switch {
	case status == http.StatusOK || status == http.StatusCreated:
		o.Kind = Confirmed
		o.Receipt = firstString(r, "IdVerificacion", "idVerificacion", "id_verificacion")
		if o.Receipt == "" {
			o.Reason = "accepted without IdVerificacion: needs review; do not resend: " + msg
		}
	case status == http.StatusTooManyRequests:
		o.Kind, o.RetryAfter, o.Reason = RateLimited, retryAfter(header, now), "SMA answered 429 Too Many Requests"
	case status >= 500:
		o.Kind, o.Reason = Transient, fmt.Sprintf("SMA answered HTTP %d: %s", status, msg)
	case status == http.StatusUnauthorized:
		o.Kind, o.Reason = RejectedTerminal, "SMA refused the credentials (401 after renewing the token): "+msg
	case status == http.StatusForbidden:
		o.Kind, o.Reason = RejectedTerminal, "SMA forbids this UF/proceso for these credentials (403): "+msg
	default:
		o.Kind, o.Reason = Rejected, fmt.Sprintf("SMA rejected: HTTP %d: %s", status, msg)
	}
	return o
}

// firstString returns the first of keys that m holds as a string or
// number, written as a string.
func firstString(m map[string]any, keys ...string) string {
	for _, k := range keys {
		switch v := m[k].(type) {
		case string:
			if s := strings.TrimSpace(v); s != "" {
				return s
			}
		case float64:
			return strconv.FormatFloat(v, 'f', -1, 64)
		}
	}
	return ""
}
