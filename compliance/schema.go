package compliance

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// compileSchema compiles a JSON Schema (draft 2020-12 unless it says
// otherwise), asserting formats such as "date".
func compileSchema(raw []byte) (*jsonschema.Schema, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, errors.New("is empty")
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("is not valid JSON: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("source.json", doc); err != nil {
		return nil, fmt.Errorf("adding schema: %w", err)
	}
	sch, err := c.Compile("source.json")
	if err != nil {
		return nil, fmt.Errorf("does not compile: %w", err)
	}
	return sch, nil
}

// schemaCache compiles each distinct schema once. Safe for concurrent use.
type schemaCache struct {
	mu sync.Mutex
	m  map[string]*jsonschema.Schema
}

func (c *schemaCache) get(raw []byte) (*jsonschema.Schema, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sch, ok := c.m[string(raw)]; ok {
		return sch, nil
	}
	sch, err := compileSchema(raw)
	if err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = map[string]*jsonschema.Schema{}
	}
	c.m[string(raw)] = sch
	return sch, nil
}

// validateBody checks a request body against the source's schema. A body
// that fails is ErrInvalid, the reason naming each failing field
// ("medicionSubterranea.caudal: ...").
func (c *schemaCache) validateBody(src Source, body []byte) error {
	sch, err := c.get(src.Schema)
	if err != nil {
		return fmt.Errorf("schema of source %s: %w", src.Code, err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("decoding the body to validate it: %w", err)
	}
	err = sch.Validate(inst)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return fmt.Errorf("validating the body: %w", err)
	}
	return invalidf("schema: %s", schemaReason(ve))
}

// schemaReason flattens a validation error to its leaves, each as
// "<field path>: <message>", redacting nothing because the leaves name
// fields and constraints, never the password value (a password fails only
// on type or length).
func schemaReason(ve *jsonschema.ValidationError) string {
	p := message.NewPrinter(language.English)
	var leaves []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			field := strings.Join(e.InstanceLocation, ".")
			if field == "" {
				field = "(body)"
			}
			msg := e.ErrorKind.LocalizedString(p)
			if len(e.InstanceLocation) > 0 && e.InstanceLocation[len(e.InstanceLocation)-1] == "password" {
				msg = "invalid"
			}
			leaves = append(leaves, field+": "+msg)
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	sort.Strings(leaves)
	return strings.Join(leaves, "; ")
}
