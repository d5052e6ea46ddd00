package notify

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"text/template"
	"time"
)

//go:embed templates/*/*.tmpl
var templateFiles embed.FS

// Types are the notification types with templates of their own: those of
// point_notifications.notification_types, plus "system" for administrators.
// A notification of another type is rendered with the system template.
var Types = []string{"threshold", "data_gap", "stuck_sensor", "totalizer_reset",
	"compliance_missing", "compliance_rejected", "daily_report", "system"}

// Languages are the languages every type has a template in; the first is
// the default.
var Languages = []string{"es", "en"}

// Message is a notification rendered for one language: Subject is the email
// subject and in-app title, Body the email and in-app text, Short the SMS.
type Message struct {
	Subject, Body, Short string
}

// View is what templates see: the notification, the point's name, and the
// data fields formatted for people.
type View struct {
	ID, Type, Severity, Title, Body string
	// Point is the point code; PointName its catchment_points.name (the
	// code when unknown). Both empty for notifications about no point.
	Point, PointName string
	// Variable, Value and Unit come from data; Value is formatted for the
	// language (decimal comma in Spanish).
	Variable, Value, Unit string
	// At is data["at"] (else the creation time) in TimeZone, formatted
	// for the language with the zone's abbreviation.
	At       string
	TimeZone string
	// State is data["state"]: opened, renotified or resolved.
	State string
	// Data is the notification's data.
	Data map[string]string
	lang string
}

// ValueUnit is the value and its unit ("12,5 L/s"); empty without a value.
func (v View) ValueUnit() string {
	if v.Value == "" {
		return ""
	}
	if v.Unit == "" {
		return v.Value
	}
	return v.Value + " " + v.Unit
}

// Renderer renders notifications with the embedded templates. It is safe
// for concurrent use.
type Renderer struct {
	byLang map[string]map[string]*template.Template
}

// NewRenderer parses every embedded template and checks that each type has
// one in each language.
func NewRenderer() (*Renderer, error) {
	r := &Renderer{byLang: map[string]map[string]*template.Template{}}
	for _, lang := range Languages {
		r.byLang[lang] = map[string]*template.Template{}
		for _, typ := range Types {
			name := path.Join("templates", lang, typ+".tmpl")
			src, err := fs.ReadFile(templateFiles, name)
			if err != nil {
				return nil, fmt.Errorf("notify: template of %s in %s: %w", typ, lang, err)
			}
			t, err := template.New(name).Funcs(funcs(lang)).Option("missingkey=zero").Parse(string(src))
			if err != nil {
				return nil, fmt.Errorf("notify: parsing %s: %w", name, err)
			}
			for _, block := range []string{"subject", "body", "sms"} {
				if t.Lookup(block) == nil {
					return nil, fmt.Errorf("notify: %s lacks {{define %q}}", name, block)
				}
			}
			r.byLang[lang][typ] = t
		}
	}
	return r, nil
}

// Render renders v in lang (the default language when unknown) with the
// template of v.Type (the system one when it has none).
func (r *Renderer) Render(lang string, v View) (Message, error) {
	ts, ok := r.byLang[lang]
	if !ok {
		lang = Languages[0]
		ts = r.byLang[lang]
	}
	t, ok := ts[v.Type]
	if !ok {
		t = ts["system"]
	}
	v.lang = lang
	var m Message
	for _, b := range []struct {
		name string
		dst  *string
	}{{"subject", &m.Subject}, {"body", &m.Body}, {"sms", &m.Short}} {
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, b.name, v); err != nil {
			return Message{}, fmt.Errorf("rendering %s of %s in %s: %w", b.name, v.Type, lang, err)
		}
		*b.dst = strings.TrimSpace(buf.String())
	}
	// A subject is one line, whatever the data held.
	m.Subject = strings.Join(strings.Fields(m.Subject), " ")
	return m, nil
}

// NewView builds the view of a notification: point name and zone come from
// catchment_points (zone the point's, else data["time_zone"], else
// defaultZone).
func NewView(id, typ, severity, title, body, point, pointName, zone string, data map[string]string, created time.Time, lang string) View {
	if data == nil {
		data = map[string]string{}
	}
	if pointName == "" {
		pointName = data["point_name"]
	}
	if pointName == "" {
		pointName = point
	}
	loc, err := time.LoadLocation(zone)
	if err != nil || zone == "" {
		loc, zone = time.UTC, "UTC"
	}
	at := created
	if s := data["at"]; s != "" {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			at = t
		}
	}
	v := View{ID: id, Type: typ, Severity: severity, Title: title, Body: body, Point: point, PointName: pointName,
		Variable: data["variable"], Unit: data["unit"], TimeZone: zone, State: data["state"], Data: data, lang: lang}
	if v.Unit == "" {
		v.Unit = canonicalUnits[v.Variable]
	}
	v.Unit = strings.NewReplacer("m3", "m³").Replace(v.Unit)
	v.Value = formatValue(data["value"], lang)
	layout := "02-01-2006 15:04 MST"
	if lang == "en" {
		layout = "2006-01-02 15:04 MST"
	}
	v.At = at.In(loc).Format(layout)
	if name := at.In(loc).Format("MST"); strings.HasPrefix(name, "-") || strings.HasPrefix(name, "+") {
		// Zones without an abbreviation print an offset; say which zone.
		v.At = strings.TrimSuffix(v.At, name) + name + " (" + zone + ")"
	}
	return v
}

var canonicalUnits = map[string]string{"flow": "L/s", "totalizer": "m3", "level": "m"}

// formatValue writes a number with at most three decimals, a decimal comma
// in Spanish; anything else is returned as it is.
func formatValue(s, lang string) string {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return s
	}
	out := strconv.FormatFloat(f, 'f', 3, 64)
	out = strings.TrimRight(strings.TrimRight(out, "0"), ".")
	if lang == "es" {
		out = strings.Replace(out, ".", ",", 1)
	}
	return out
}

var variableNames = map[string]map[string]string{
	"es": {"flow": "caudal", "totalizer": "totalizador", "level": "nivel freático"},
	"en": {"flow": "flow", "totalizer": "totalizer", "level": "water level"},
}

var severityNames = map[string]map[string]string{
	"es": {"info": "info", "warning": "aviso", "critical": "crítico"},
	"en": {"info": "info", "warning": "warning", "critical": "critical"},
}

var stateNames = map[string]map[string]string{
	"es": {"opened": "abierta", "renotified": "sigue abierta", "resolved": "resuelta", "": "abierta"},
	"en": {"opened": "open", "renotified": "still open", "resolved": "resolved", "": "open"},
}

func funcs(lang string) template.FuncMap {
	lookup := func(m map[string]map[string]string) func(string) string {
		return func(s string) string {
			if v, ok := m[lang][s]; ok {
				return v
			}
			return s
		}
	}
	return template.FuncMap{
		"varName": lookup(variableNames),
		"sev":     func(s string) string { return strings.ToUpper(lookup(severityNames)(s)) },
		"state":   lookup(stateNames),
	}
}
