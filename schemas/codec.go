package schemas

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/stackvps/stackvps/config"
)

var (
	// ErrBadRecord is wrapped by every error that a value or a record is
	// permanently unusable: Decode of bytes that are not a valid record of
	// the codec's schema (garbage, truncated, trailing bytes, an empty first
	// field, a schema id the registry does not know or whose schema cannot be
	// resolved against ours), and Encode of a record that breaks the schema's
	// invariants. Such a record belongs in a dead-letter topic, not a retry.
	ErrBadRecord = errors.New("bad record")

	// ErrUnknownSchema is returned by [Schema] for a name that is not one of
	// the embedded schemas.
	ErrUnknownSchema = errors.New("unknown schema")
)

// fetchTimeout bounds fetching one unknown writer schema from the registry
// during Decode, which has no context of its own.
const fetchTimeout = 10 * time.Second

// maxMissingIDs bounds the cache of schema ids the registry said it does not
// have, so a flood of garbage framed values cannot grow it without limit.
const maxMissingIDs = 1024

// maxPooledBuffer is the largest encoder buffer returned to the pool; a rare
// huge record must not pin its buffer forever.
const maxPooledBuffer = 64 << 10

//go:embed *.avsc
var files embed.FS

// api is the Avro configuration shared by every codec, so compiled encoders
// and decoders are cached once per schema and type.
var api = avro.Config{
	TagKey: "avro",
	// Maps are written as count-prefixed blocks without the optional byte
	// size, the simplest form of the spec, which every Avro reader supports.
	DisableBlockSizeHeader: true,
	UnionResolutionError:   true,
	MaxByteSliceSize:       1 << 20,
}.Freeze()

var (
	writers = sync.Pool{New: func() any { return avro.NewWriter(nil, 512, avro.WithWriterConfig(api)) }}
	readers = sync.Pool{New: func() any { return avro.NewReader(nil, 0, avro.WithReaderConfig(api)) }}
)

// Schema returns the text of the embedded .avsc file called name, with or
// without its ".avsc" extension: "reading", "compliance_record" or
// "notification". An unknown name returns an error wrapping
// [ErrUnknownSchema].
func Schema(name string) (string, error) {
	if strings.ContainsAny(name, "/\\") {
		return "", fmt.Errorf("%w: %q", ErrUnknownSchema, name)
	}
	b, err := files.ReadFile(strings.TrimSuffix(name, ".avsc") + ".avsc")
	if err != nil {
		return "", fmt.Errorf("%w: %q", ErrUnknownSchema, name)
	}
	return string(b), nil
}

// Codec encodes and decodes one record type T of one topic.
//
// With a registry it writes the Confluent wire format, with the schema
// registered under subject "<topic>-value" (TopicNameStrategy) by the
// constructor; without one it writes plain Avro binary. Decode accepts both
// forms whatever the configuration (see the package documentation for how
// they are told apart and why that is unambiguous).
//
// The header is written with franz-go's sr.ConfluentHeader, computed once, so
// framing costs one 5-byte copy; framed values are read through an sr.Serde
// that maps each schema id to its decoder.
//
// A Codec is safe for concurrent use. Encoding and decoding with the codec's
// own schema never touch the network; with a registry, the first framed value
// carrying another schema id makes Decode fetch that schema (see Decode).
type Codec[T any] struct {
	name   string          // record name, for messages
	text   string          // .avsc text, registered as is
	schema avro.Schema     // embedded schema: the writer schema of Encode, the reader schema of Decode
	first  func(*T) string // the record's first field, which must not be empty
	header []byte          // Confluent header with our schema id; empty without a registry
	// fast appends the encoding of a T field by field, without the
	// reflection of WriteVal and without a Writer; nil uses WriteVal. It
	// must write exactly what WriteVal writes (see appendReading).
	fast func([]byte, *T) []byte

	// With a registry only.
	client *sr.Client
	serde  *sr.Serde // schema id -> decoder, lock-free lookups
	// fetchMu serialises learning unknown schema ids and guards missing.
	fetchMu sync.Mutex
	missing map[int]error // ids the registry does not have, with the error to return
}

// NewReadingCodec returns the codec of [Reading], the value of topic (the
// configured telemetry.readings). With reg.URL set it registers the schema
// now, within ctx, and fails if the registry refuses it or cannot be reached.
func NewReadingCodec(ctx context.Context, reg config.SchemaRegistry, topic string) (*Codec[Reading], error) {
	c, err := newCodec(ctx, reg, topic, "reading", func(r *Reading) string { return r.Point })
	if err != nil {
		return nil, err
	}
	c.fast = appendReading
	return c, nil
}

// NewComplianceRecordCodec returns the codec of [ComplianceRecord], the value
// of topic (the configured compliance.records). Registration is as for
// [NewReadingCodec].
func NewComplianceRecordCodec(ctx context.Context, reg config.SchemaRegistry, topic string) (*Codec[ComplianceRecord], error) {
	return newCodec(ctx, reg, topic, "compliance_record", func(r *ComplianceRecord) string { return r.Point })
}

// NewNotificationCodec returns the codec of [Notification], the value of
// topic (the configured notifications). Registration is as for
// [NewReadingCodec].
func NewNotificationCodec(ctx context.Context, reg config.SchemaRegistry, topic string) (*Codec[Notification], error) {
	return newCodec(ctx, reg, topic, "notification", func(n *Notification) string { return n.ID })
}

// newCodec parses the embedded schema file and, when reg.URL is set,
// registers it under "<topic>-value". ctx bounds the registration only.
func newCodec[T any](ctx context.Context, reg config.SchemaRegistry, topic, file string, first func(*T) string) (*Codec[T], error) {
	if topic == "" {
		return nil, errors.New("schemas: topic must not be empty")
	}
	text, err := Schema(file)
	if err != nil {
		return nil, err
	}
	schema, err := avro.ParseWithCache(text, "", &avro.SchemaCache{})
	if err != nil {
		return nil, fmt.Errorf("parsing embedded schema %s.avsc: %w", file, err)
	}
	rec, ok := schema.(*avro.RecordSchema)
	if !ok || len(rec.Fields()) == 0 || rec.Fields()[0].Type().Type() != avro.String {
		// The framing detection of Decode relies on this; see the package doc.
		return nil, fmt.Errorf("embedded schema %s.avsc: must be a record whose first field is a string", file)
	}
	c := &Codec[T]{name: rec.Name(), text: text, schema: schema, first: first}
	// Compile the encoder and decoder now, so the first record pays nothing
	// and a struct that does not match the schema fails here.
	var zero T
	b, err := api.Marshal(schema, &zero)
	if err != nil {
		return nil, fmt.Errorf("compiling %s encoder: %w", c.name, err)
	}
	if err := api.Unmarshal(schema, b, &zero); err != nil {
		return nil, fmt.Errorf("compiling %s decoder: %w", c.name, err)
	}
	if reg.URL == "" {
		return c, nil
	}
	if err := c.register(ctx, reg, topic+"-value"); err != nil {
		return nil, err
	}
	return c, nil
}

// register creates the registry client and registers the embedded schema
// under subject, which returns the existing id when it is already there.
func (c *Codec[T]) register(ctx context.Context, reg config.SchemaRegistry, subject string) error {
	opts := []sr.ClientOpt{sr.URLs(reg.URL), sr.UserAgent("stackvps")}
	if reg.Username != "" || reg.Password.Reveal() != "" {
		opts = append(opts, sr.BasicAuth(reg.Username, reg.Password.Reveal()))
	}
	cl, err := sr.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("creating schema registry client for %s: %w", reg.URL, err)
	}
	id, err := cl.RegisterSchema(ctx, subject, sr.Schema{Schema: c.text, Type: sr.TypeAvro}, -1, -1)
	if err != nil {
		return fmt.Errorf("registering %s schema under subject %q: %w", c.name, subject, err)
	}
	c.client = cl
	c.header, _ = new(sr.ConfluentHeader).AppendEncode(nil, id, nil) // never fails
	c.serde = sr.NewSerde()
	c.serde.Register(id, (*T)(nil), sr.DecodeFn(func(b []byte, v any) error {
		return c.decode(c.schema, b, v.(*T))
	}))
	c.missing = make(map[int]error)
	return nil
}

// SchemaID returns the id the registry gave the codec's schema, and false
// without a registry.
func (c *Codec[T]) SchemaID() (int, bool) {
	if c.serde == nil {
		return 0, false
	}
	id, _, _ := c.serde.DecodeID(c.header)
	return id, true
}

// Encode returns the encoding of v: the Confluent wire format with a
// registry, plain Avro binary without. It is safe for concurrent use and
// allocates only the returned slice. Times are truncated to the microsecond.
//
// A record whose first field (Reading.Point, ComplianceRecord.Point,
// Notification.ID) is empty is refused with an error wrapping [ErrBadRecord]:
// its plain encoding would start with byte 0 and be mistaken for a framed
// value.
func (c *Codec[T]) Encode(v *T) ([]byte, error) {
	if err := c.check(v); err != nil {
		return nil, err
	}
	if c.fast != nil {
		return c.fast(append(make([]byte, 0, len(c.header)+fastEncodingSize), c.header...), v), nil
	}
	w := writers.Get().(*avro.Writer)
	defer putWriter(w)
	if err := c.write(w, v); err != nil {
		return nil, err
	}
	body := w.Buffer()
	out := make([]byte, len(c.header)+len(body))
	copy(out, c.header)
	copy(out[len(c.header):], body)
	return out, nil
}

// AppendEncode appends the encoding of v (as [Codec.Encode]) to dst and
// returns the extended slice; it allocates nothing when dst has room. On
// error it returns dst unchanged.
func (c *Codec[T]) AppendEncode(dst []byte, v *T) ([]byte, error) {
	if err := c.check(v); err != nil {
		return dst, err
	}
	if c.fast != nil {
		return c.fast(append(dst, c.header...), v), nil
	}
	w := writers.Get().(*avro.Writer)
	defer putWriter(w)
	if err := c.write(w, v); err != nil {
		return dst, err
	}
	dst = append(dst, c.header...)
	return append(dst, w.Buffer()...), nil
}

func (c *Codec[T]) check(v *T) error {
	if v == nil {
		return fmt.Errorf("%w: encoding %s: nil record", ErrBadRecord, c.name)
	}
	if c.first(v) == "" {
		return fmt.Errorf("%w: encoding %s: first field %q must not be empty", ErrBadRecord, c.name, c.firstField())
	}
	return nil
}

func (c *Codec[T]) firstField() string {
	return c.schema.(*avro.RecordSchema).Fields()[0].Name()
}

// write encodes v into the reset writer w.
func (c *Codec[T]) write(w *avro.Writer, v *T) error {
	w.Reset(nil)
	w.Error = nil
	w.WriteVal(c.schema, v)
	if w.Error != nil {
		return fmt.Errorf("%w: encoding %s: %w", ErrBadRecord, c.name, w.Error)
	}
	return nil
}

func putWriter(w *avro.Writer) {
	if cap(w.Buffer()) > maxPooledBuffer {
		return
	}
	w.Error = nil
	writers.Put(w)
}

// Decode decodes b, in either wire form, into v, overwriting every field of
// v. It is safe for concurrent use; v is not retained, and neither is b.
//
// Errors wrap [ErrBadRecord] when b is not a valid record: garbage,
// truncated, bytes left over, an empty first field, or (with a registry) a
// schema id the registry does not have or whose schema does not resolve
// against ours. On such an error v holds no useful value.
//
// With a registry, the first value carrying a schema id other than the
// codec's own makes Decode fetch that writer schema from the registry (at
// most 10 s, then cached for the codec's lifetime). If the registry cannot be
// reached, the error does not wrap ErrBadRecord: it is transient, and the same
// value decodes once the registry answers.
func (c *Codec[T]) Decode(b []byte, v *T) error {
	if v == nil {
		return fmt.Errorf("schemas: decoding %s into a nil pointer", c.name)
	}
	if len(b) < 5 || b[0] != 0 {
		return c.decode(c.schema, b, v)
	}
	if c.serde == nil {
		// Framed, no registry: the id is ignored, the embedded schema is the
		// writer schema.
		return c.decode(c.schema, b[5:], v)
	}
	err := c.serde.Decode(b, v)
	if !errors.Is(err, sr.ErrNotRegistered) {
		return err
	}
	id, _, _ := c.serde.DecodeID(b)
	if err := c.learn(id); err != nil {
		return err
	}
	return c.serde.Decode(b, v)
}

// decode decodes the Avro binary b, written with schema (the embedded schema
// or one resolved from a writer schema), into v.
func (c *Codec[T]) decode(schema avro.Schema, b []byte, v *T) error {
	r := readers.Get().(*avro.Reader)
	r.Reset(b)
	r.Error = nil
	var zero T
	*v = zero
	r.ReadVal(schema, v)
	err := r.Error
	if err == nil {
		// A complete record reads exactly its bytes and never asks for more;
		// Peek sets io.EOF only when nothing is left.
		if r.Peek(); r.Error == nil {
			err = errors.New("bytes left over after the record")
		}
	} else if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	r.Reset(nil)
	r.Error = nil
	readers.Put(r)
	if err != nil {
		return fmt.Errorf("%w: decoding %s: %w", ErrBadRecord, c.name, err)
	}
	if c.first(v) == "" {
		return fmt.Errorf("%w: decoding %s: first field %q is empty", ErrBadRecord, c.name, c.firstField())
	}
	return nil
}

// learn fetches the writer schema of id from the registry, resolves it
// against the embedded reader schema and registers a decoder for id.
func (c *Codec[T]) learn(id int) error {
	c.fetchMu.Lock()
	defer c.fetchMu.Unlock()
	if c.serde.IsRegistered(id, sr.DecodeFn) {
		return nil // another goroutine learnt it meanwhile
	}
	if err, ok := c.missing[id]; ok {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	s, err := c.client.SchemaByID(ctx, id)
	if err != nil {
		var re *sr.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusNotFound {
			return fmt.Errorf("fetching schema id %d of a %s from the registry: %w", id, c.name, err)
		}
		return c.forget(id, fmt.Errorf("%w: decoding %s: schema id %d is not in the registry: %w", ErrBadRecord, c.name, id, err))
	}
	if s.Type != sr.TypeAvro {
		return c.forget(id, fmt.Errorf("%w: decoding %s: schema id %d is %s, not Avro", ErrBadRecord, c.name, id, s.Type))
	}
	if len(s.References) > 0 {
		return c.forget(id, fmt.Errorf("%w: decoding %s: schema id %d has references, which are not supported", ErrBadRecord, c.name, id))
	}
	writer, err := avro.ParseWithCache(s.Schema, "", &avro.SchemaCache{})
	if err != nil {
		return c.forget(id, fmt.Errorf("%w: decoding %s: parsing schema id %d: %w", ErrBadRecord, c.name, id, err))
	}
	resolved, err := avro.NewSchemaCompatibility().Resolve(c.schema, writer)
	if err != nil {
		return c.forget(id, fmt.Errorf("%w: decoding %s: schema id %d cannot be read as %s: %w", ErrBadRecord, c.name, id, c.name, err))
	}
	c.serde.Register(id, writerSchema{}, sr.DecodeFn(func(b []byte, v any) error {
		return c.decode(resolved, b, v.(*T))
	}))
	return nil
}

// forget remembers that id cannot be decoded (bounded) and returns err.
// c.fetchMu must be held.
func (c *Codec[T]) forget(id int, err error) error {
	if len(c.missing) < maxMissingIDs {
		c.missing[id] = err
	}
	return err
}

// writerSchema is the type that decode-only registrations of foreign schema
// ids are made under in the Serde: sr.Serde maps each Go type to the last id
// registered with it for encoding, so they must not be registered as *T,
// which stays bound to the codec's own id.
type writerSchema struct{}
