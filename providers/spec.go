package providers

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Spec is a provider defined in YAML: where a JSON payload carries the
// device id, the event time and each variable with its unit and scale (see
// the package documentation for the format). A *Spec is a Decoder; it is
// immutable once parsed and safe for concurrent use.
type Spec struct {
	name   string
	device string    // gjson path; "" takes Payload.Device
	time   *timeSpec // nil takes Payload.ReceivedAt
	vars   []varSpec
	regs   *regSpec
	// paths are every path above, read in one pass; the slots are the
	// indexes of the device's and the registers' values in its lookup.
	paths      *pathSet
	deviceSlot int
	regsSlot   int
}

// Name returns the provider name, matched against the record's "provider"
// header.
func (s *Spec) Name() string { return s.name }

type timeKind int

const (
	timeRFC3339 timeKind = iota
	timeUnixS
	timeUnixMS
	timeUnixUS
	timeLayout
)

type timeSpec struct {
	path   string
	slot   int // in Spec.paths
	kind   timeKind
	layout string
	loc    *time.Location
	format string // as written, for messages
}

type varSpec struct {
	variable string
	path     string
	unitPath string     // "" when the unit is fixed
	conv     conversion // the fixed unit's conversion
	q        unitReader // the variable's, for a unit read from the payload
	unit     string     // canonical unit
	scale    float64
	scaleDec decimal // scale's exact decimal, when scaleExact
	// scaleExact is whether scaleDec holds scale.
	scaleExact bool
	optional   bool
	// pathSlot and unitSlot (when unitPath is set) index Spec.paths.
	pathSlot, unitSlot int
}

type regSpec struct {
	path, id, value string
	unitField       string // "" when the unit is fixed
	entries         []regEntry
	byID            map[string]int // register id -> index in entries
	required        []int          // indexes in entries
	// elem are id, value and unitField, read in one pass over an element
	// of the array, at these indexes.
	elem                        *pathSet
	idSlot, valueSlot, unitSlot int
}

type regEntry struct {
	id, variable string
	unit         string     // canonical unit
	conv         conversion // for a fixed unit
	q            unitReader // the variable's, for a unit read from the payload
}

// namePattern is what a provider name may look like: it is an MQTT topic
// level and a Kafka header value.
var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ParseSpec parses and validates a YAML provider spec. Every problem is
// reported, each naming its key path ("variables[1].unit: unknown unit
// \"furlongs\" for flow; ..."), joined into one error; an unknown unit
// also matches ErrUnknownUnit.
func ParseSpec(data []byte) (*Spec, error) {
	var f specFile
	var p problems
	decodeSpecYAML(data, &f, &p)
	if len(p.errs) > 0 && f.Name == "" && f.Variables == nil && f.Registers == nil {
		return nil, p.err() // nothing decoded: don't pile "missing" on top
	}
	s := compileSpec(&f, &p)
	if err := p.err(); err != nil {
		return nil, err
	}
	return s, nil
}

func compileSpec(f *specFile, p *problems) *Spec {
	s := &Spec{name: f.Name, device: f.Device}
	switch {
	case f.Name == "":
		p.addf("name", "must not be empty")
	case !namePattern.MatchString(f.Name):
		p.addf("name", "must be lowercase letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit); got %q", f.Name)
	}
	if f.Format != "" && f.Format != "json" {
		p.addf("format", "must be json (binary formats are code decoders); got %q", f.Format)
	}
	if f.Time != nil {
		s.time = compileTime(f.Time, p)
	}
	switch {
	case f.Variables != nil && f.Registers != nil:
		p.addf("registers", "cannot be given together with variables; use one")
	case f.Variables == nil && f.Registers == nil:
		p.addf("(file)", "needs variables or registers")
	case f.Registers != nil:
		s.regs = compileRegisters(f.Registers, p)
	case len(f.Variables) == 0:
		p.addf("variables", "must not be empty")
	default:
		s.vars = compileVariables(f.Variables, p)
	}
	s.compilePaths()
	return s
}

// compilePaths builds the spec's path sets and records each path's slot.
func (s *Spec) compilePaths() {
	s.paths = newPathSet()
	if s.device != "" {
		s.deviceSlot = s.paths.add(s.device)
	}
	if s.time != nil {
		s.time.slot = s.paths.add(s.time.path)
	}
	for i := range s.vars {
		v := &s.vars[i]
		v.pathSlot = s.paths.add(v.path)
		if v.unitPath != "" {
			v.unitSlot = s.paths.add(v.unitPath)
		}
	}
	if rs := s.regs; rs != nil {
		s.regsSlot = s.paths.add(rs.path)
		rs.elem = newPathSet()
		rs.idSlot = rs.elem.add(rs.id)
		rs.valueSlot = rs.elem.add(rs.value)
		if rs.unitField != "" {
			rs.unitSlot = rs.elem.add(rs.unitField)
		}
	}
}

func compileTime(t *timeFile, p *problems) *timeSpec {
	ts := &timeSpec{path: t.Path, loc: time.UTC, format: t.Format}
	if t.Path == "" {
		p.addf("time.path", "must not be empty (omit the time block to use the reception time)")
	}
	switch {
	case t.Format == "" || t.Format == "rfc3339":
		ts.kind, ts.format = timeRFC3339, "rfc3339"
	case t.Format == "unix_s":
		ts.kind = timeUnixS
	case t.Format == "unix_ms":
		ts.kind = timeUnixMS
	case t.Format == "unix_us":
		ts.kind = timeUnixUS
	case strings.HasPrefix(t.Format, "layout:"):
		ts.kind, ts.layout = timeLayout, strings.TrimPrefix(t.Format, "layout:")
		if err := checkLayout(ts.layout); err != nil {
			p.addf("time.format", "%v", err)
		}
	default:
		p.addf("time.format", "must be rfc3339, unix_s, unix_ms, unix_us or layout:<Go time layout>; got %q", t.Format)
	}
	if t.Timezone != "" {
		if ts.kind != timeLayout {
			p.addf("time.timezone", "applies only to a layout: format; %s times carry their own zone", ts.format)
		} else if loc, err := time.LoadLocation(t.Timezone); err != nil {
			p.addf("time.timezone", "unknown time zone %q", t.Timezone)
		} else {
			ts.loc = loc
		}
	}
	return ts
}

// checkLayout rejects a Go layout that cannot give a full date: formatting a
// reference time and parsing it back must give the same day.
func checkLayout(layout string) error {
	if strings.TrimSpace(layout) == "" {
		return fmt.Errorf("layout must not be empty")
	}
	ref := time.Date(2021, time.March, 4, 5, 6, 7, 0, time.UTC)
	got, err := time.Parse(layout, ref.Format(layout))
	if err != nil || got.Year() != ref.Year() || got.Month() != ref.Month() || got.Day() != ref.Day() {
		return fmt.Errorf("layout %q must give a full date (year, month, day), like \"2006-01-02 15:04:05\"", layout)
	}
	return nil
}

func compileVariables(vars []variableFile, p *problems) []varSpec {
	out := make([]varSpec, 0, len(vars))
	readBy := map[string]int{}
	for i, v := range vars {
		key := fmt.Sprintf("variables[%d]", i)
		vs := varSpec{variable: v.Variable, path: v.Path, unitPath: v.UnitPath, scale: 1, optional: v.Optional}
		canonical, known := CanonicalUnit(v.Variable)
		switch {
		case v.Variable == "":
			p.addf(key+".variable", "must not be empty")
		case !known:
			p.addf(key+".variable", "unknown variable %q; known: %s", v.Variable, strings.Join(Variables(), ", "))
		default:
			if j, dup := readBy[v.Variable]; dup {
				p.addf(key+".variable", "%s is already read by variables[%d]", v.Variable, j)
			}
			readBy[v.Variable] = i
			vs.unit, vs.q = canonical, newUnitReader(quantities[v.Variable])
		}
		if v.Path == "" {
			p.addf(key+".path", "must not be empty")
		}
		switch {
		case v.Unit != nil && v.UnitPath != "":
			p.addf(key, "give unit or unit_path, not both")
		case v.Unit == nil && v.UnitPath == "":
			if _, unitless := quantities[v.Variable].units[""]; unitless {
				vs.conv, _, _ = lookupUnit(v.Variable, "")
			} else if known {
				p.addf(key, "needs unit or unit_path")
			}
		case v.Unit != nil && known:
			c, _, err := lookupUnit(v.Variable, *v.Unit)
			if err != nil {
				p.errs = append(p.errs, &fieldError{key: key + ".unit", err: withKnownUnits(err, v.Variable)})
			}
			vs.conv = c
		}
		if v.Scale != nil {
			if *v.Scale == 0 || !finite(*v.Scale) {
				p.addf(key+".scale", "must be a finite non-zero number; got %g", *v.Scale)
			} else {
				vs.scale = *v.Scale
				vs.scaleDec, vs.scaleExact = decimalOf(*v.Scale)
			}
		}
		out = append(out, vs)
	}
	return out
}

func compileRegisters(r *registersFile, p *problems) *regSpec {
	rs := &regSpec{path: r.Path, id: r.ID, value: r.Value, unitField: "unit", byID: map[string]int{}}
	if r.Path == "" {
		p.addf("registers.path", "must not be empty")
	}
	if rs.id == "" {
		rs.id = "id"
	}
	if rs.value == "" {
		rs.value = "value"
	}
	switch {
	case r.Unit != nil && r.FixedUnit != nil:
		p.addf("registers", "give unit or fixed_unit, not both")
	case r.FixedUnit != nil:
		rs.unitField = ""
	case r.Unit != nil && *r.Unit == "":
		p.addf("registers.unit", "must not be empty (or give fixed_unit)")
	case r.Unit != nil:
		rs.unitField = *r.Unit
	}
	if len(r.Map) == 0 {
		p.addf("registers.map", "must map at least one register id to a variable")
	}
	mappedFrom := map[string]string{}
	for _, e := range r.Map {
		key := "registers.map." + e.ID
		canonical, known := CanonicalUnit(e.Variable)
		if !known {
			p.addf(key, "unknown variable %q; known: %s", e.Variable, strings.Join(Variables(), ", "))
			continue
		}
		if from, dup := mappedFrom[e.Variable]; dup {
			p.addf(key, "%s is already mapped from %s", e.Variable, from)
			continue
		}
		mappedFrom[e.Variable] = e.ID
		entry := regEntry{id: e.ID, variable: e.Variable, unit: canonical, q: newUnitReader(quantities[e.Variable])}
		if r.FixedUnit != nil {
			c, _, err := lookupUnit(e.Variable, *r.FixedUnit)
			if err != nil {
				p.errs = append(p.errs, &fieldError{key: "registers.fixed_unit", err: fmt.Errorf("%w (%s)", withKnownUnits(err, e.Variable), key)})
			}
			entry.conv = c
		}
		rs.byID[e.ID] = len(rs.entries)
		rs.entries = append(rs.entries, entry)
	}
	seen := map[string]bool{}
	for i, v := range r.Required {
		key := fmt.Sprintf("registers.required[%d]", i)
		from, mapped := mappedFrom[v]
		switch {
		case seen[v]:
			p.addf(key, "%s is given twice", v)
		case !mapped:
			mapped := make([]string, 0, len(mappedFrom))
			for variable := range mappedFrom {
				mapped = append(mapped, variable)
			}
			slices.Sort(mapped)
			p.addf(key, "%q is not mapped by registers.map (mapped: %s)", v, strings.Join(mapped, ", "))
		default:
			rs.required = append(rs.required, rs.byID[from])
		}
		seen[v] = true
	}
	return rs
}

// withKnownUnits adds the accepted spellings to an unknown-unit error.
func withKnownUnits(err error, variable string) error {
	units := Units(variable)
	for i, u := range units {
		if u == "" {
			units[i] = `""`
		}
	}
	return fmt.Errorf("%w; known: %s", err, strings.Join(units, ", "))
}

// LoadSpecDir parses every *.yaml and *.yml file of dir (not its
// subdirectories), in name order. Problems are reported per file
// ("flowmeter.yaml: variables[1].unit: ..."), all files at once; two specs
// with the same name are an error. A missing directory is an error; an
// empty one gives no specs.
func LoadSpecDir(dir string) ([]*Spec, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading provider specs: %w", err)
	}
	var (
		specs []*Spec
		errs  problems
		names = map[string]string{}
	)
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			errs.errs = append(errs.errs, fmt.Errorf("reading provider spec: %w", err))
			continue
		}
		s, err := ParseSpec(data)
		if err != nil {
			for _, e1 := range splitJoined(err) {
				errs.errs = append(errs.errs, &fieldError{key: e.Name(), err: e1})
			}
			continue
		}
		if other, dup := names[s.Name()]; dup {
			errs.addf(e.Name(), "name: provider %q is already defined in %s", s.Name(), other)
			continue
		}
		names[s.Name()] = e.Name()
		specs = append(specs, s)
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return specs, nil
}

// splitJoined returns the errors joined in err, or err alone.
func splitJoined(err error) []error {
	var j interface{ Unwrap() []error }
	if errors.As(err, &j) {
		return j.Unwrap()
	}
	return []error{err}
}

// minTime and maxTime bound the event times a decoder accepts: from the
// Unix epoch to the last instant int64 nanoseconds hold (2262-04-11), so
// every stage can use UnixNano safely.
var (
	minTime = time.Unix(0, 0)
	maxTime = time.Unix(0, math.MaxInt64)
)
