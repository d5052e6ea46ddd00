package query

import (
	"bufio"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// kind is a column's type.
type kind uint8

const (
	kindTime   kind = iota // timestamptz: RFC 3339 in JSON and CSV, timestamp[us, UTC] in Arrow
	kindString             // text: utf8
	kindFloat              // double precision: float64 (NaN and infinities are null in JSON)
	kindInt32              // integer: int32
	kindInt64              // bigint: int64
)

// column is one column of a tabular result: its name (also its SQL column
// name), its type, and which slot of a record of that type holds it.
type column struct {
	name string
	kind kind
	slot int
}

// rawColumns are the columns of readings and of the latest readings.
var rawColumns = []column{
	{"time", kindTime, 0}, {"point", kindString, 0}, {"variable", kindString, 1},
	{"value", kindFloat, 0}, {"quality", kindInt32, 0},
}

// bucketColumns are the columns of the rollups.
var bucketColumns = []column{
	{"bucket", kindTime, 0}, {"point", kindString, 0}, {"variable", kindString, 1},
	{"min", kindFloat, 0}, {"max", kindFloat, 1}, {"avg", kindFloat, 2}, {"last", kindFloat, 3},
	{"count", kindInt64, 0},
}

// record is one row, in typed slots: one allocation-free buffer reused for
// every row of a result.
type record struct {
	t time.Time
	s [2]string
	f [4]float64
	i int64
}

// targets returns the scan destinations of cols in r.
func (r *record) targets(cols []column) []any {
	out := make([]any, len(cols))
	for i, c := range cols {
		switch c.kind {
		case kindTime:
			out[i] = &r.t
		case kindString:
			out[i] = reusedString{&r.s[c.slot]}
		case kindFloat:
			out[i] = &r.f[c.slot]
		default:
			out[i] = &r.i
		}
	}
	return out
}

// reusedString scans text into *s, allocating only when the value differs
// from the previous row's: point and variable repeat down a page.
type reusedString struct{ s *string }

// ScanBytes implements pgtype.BytesScanner; b is valid only during the call.
func (r reusedString) ScanBytes(b []byte) error {
	if string(b) != *r.s {
		*r.s = string(b)
	}
	return nil
}

// pageInfo is what a response says about the following page.
type pageInfo struct {
	// paged is set for paginated results (the data endpoint).
	paged bool
	// next is the URL of the next page and cursor its cursor; both empty
	// on the last page.
	next, cursor string
}

// tableWriter writes a tabular result as it is read: begin once, row per
// row, end once. It never holds more than one Arrow record batch.
type tableWriter interface {
	begin(p pageInfo) error
	row(r *record) error
	end() error
}

// newTableWriter returns the writer of format on w; the headers are set,
// the status is written by begin.
func newTableWriter(w http.ResponseWriter, format string, cols []column) tableWriter {
	h := w.Header()
	h.Set("Vary", "Accept")
	h.Set("X-Content-Type-Options", "nosniff")
	bw := bufio.NewWriterSize(w, 32<<10)
	flush := func() error {
		if err := bw.Flush(); err != nil {
			return err
		}
		_ = http.NewResponseController(w).Flush() // best effort: not every writer flushes
		return nil
	}
	switch format {
	case MediaCSV:
		h.Set("Content-Type", "text/csv; charset=utf-8; header=present")
		return &csvTable{w: w, bw: bw, cols: cols, flush: flush}
	case MediaArrow:
		h.Set("Content-Type", MediaArrow)
		return &arrowTable{w: w, bw: bw, cols: cols, flush: flush}
	}
	h.Set("Content-Type", MediaJSON)
	return &jsonTable{w: w, bw: bw, cols: cols, flush: flush}
}

// jsonTable writes {"next": …, "next_cursor": …, "results": [{…}, …]}
// ("next" and "next_cursor" only for paginated results), one row per line.
type jsonTable struct {
	w     http.ResponseWriter
	bw    *bufio.Writer
	cols  []column
	flush func() error
	buf   []byte
	n     int
}

func (t *jsonTable) begin(p pageInfo) error {
	t.w.WriteHeader(http.StatusOK)
	b := t.buf[:0]
	b = append(b, '{')
	if p.paged {
		b = append(b, `"next":`...)
		b = appendJSONStringOrNull(b, p.next)
		b = append(b, `,"next_cursor":`...)
		b = appendJSONStringOrNull(b, p.cursor)
		b = append(b, ',')
	}
	b = append(b, `"results":[`...)
	t.buf = b
	_, err := t.bw.Write(b)
	return err
}

func (t *jsonTable) row(r *record) error {
	b := t.buf[:0]
	if t.n > 0 {
		b = append(b, ',')
	}
	b = append(b, "\n{"...)
	for i, c := range t.cols {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, c.name...)
		b = append(b, `":`...)
		switch c.kind {
		case kindTime:
			b = append(b, '"')
			b = r.t.UTC().AppendFormat(b, time.RFC3339Nano)
			b = append(b, '"')
		case kindString:
			b = appendJSONString(b, r.s[c.slot])
		case kindFloat:
			b = appendJSONFloat(b, r.f[c.slot])
		default:
			b = strconv.AppendInt(b, r.i, 10)
		}
	}
	b = append(b, '}')
	t.buf = b
	t.n++
	_, err := t.bw.Write(b)
	return err
}

func (t *jsonTable) end() error {
	if _, err := t.bw.WriteString("\n]}\n"); err != nil {
		return err
	}
	return t.flush()
}

// csvTable writes a header line and one line per row (RFC 4180: fields
// with a comma, quote or line break are quoted, quotes doubled; lines end
// with \n as encoding/csv writes them).
type csvTable struct {
	w     http.ResponseWriter
	bw    *bufio.Writer
	cols  []column
	flush func() error
	buf   []byte
}

func (t *csvTable) begin(pageInfo) error {
	t.w.WriteHeader(http.StatusOK)
	b := t.buf[:0]
	for i, c := range t.cols {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendCSVField(b, c.name)
	}
	t.buf = append(b, '\n')
	_, err := t.bw.Write(t.buf)
	return err
}

func (t *csvTable) row(r *record) error {
	b := t.buf[:0]
	for i, c := range t.cols {
		if i > 0 {
			b = append(b, ',')
		}
		switch c.kind {
		case kindTime:
			b = r.t.UTC().AppendFormat(b, time.RFC3339Nano)
		case kindString:
			b = appendCSVField(b, neutralizeFormula(r.s[c.slot]))
		case kindFloat:
			b = strconv.AppendFloat(b, r.f[c.slot], 'g', -1, 64)
		default:
			b = strconv.AppendInt(b, r.i, 10)
		}
	}
	t.buf = append(b, '\n')
	_, err := t.bw.Write(t.buf)
	return err
}

func (t *csvTable) end() error { return t.flush() }

// neutralizeFormula keeps a text cell from running as a formula when the CSV
// is opened in a spreadsheet (OWASP "CSV injection"): a value starting with
// =, +, -, @, tab or carriage return gets a leading apostrophe. Only text
// columns (point codes, device ids, units) pass through here; numbers are
// written as numbers.
func neutralizeFormula(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// appendCSVField appends s as a CSV field, quoted when it must be (as
// encoding/csv decides).
func appendCSVField(b []byte, s string) []byte {
	if s == "" || (!strings.ContainsAny(s, ",\"\r\n") && s[0] != ' ' && s[0] != '\t' && s != `\.`) {
		return append(b, s...)
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			b = append(b, '"')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

// arrowBatchRows is the length of the Arrow record batches streamed.
const arrowBatchRows = 8192

// arrowTable writes an Arrow IPC stream: the schema (with the next link and
// cursor in its metadata, keys "next" and "next_cursor"), then a record
// batch per arrowBatchRows rows, each flushed to the client as it is done.
type arrowTable struct {
	w     http.ResponseWriter
	bw    *bufio.Writer
	cols  []column
	flush func() error
	bld   *array.RecordBuilder
	iw    *ipc.Writer
	n     int
}

// arrowType returns the Arrow type of a column kind.
func arrowType(k kind) arrow.DataType {
	switch k {
	case kindTime:
		return &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	case kindString:
		return arrow.BinaryTypes.String
	case kindFloat:
		return arrow.PrimitiveTypes.Float64
	case kindInt32:
		return arrow.PrimitiveTypes.Int32
	}
	return arrow.PrimitiveTypes.Int64
}

func (t *arrowTable) begin(p pageInfo) error {
	fields := make([]arrow.Field, len(t.cols))
	for i, c := range t.cols {
		fields[i] = arrow.Field{Name: c.name, Type: arrowType(c.kind)}
	}
	var md *arrow.Metadata
	if p.paged {
		m := arrow.NewMetadata([]string{"next", "next_cursor"}, []string{p.next, p.cursor})
		md = &m
	}
	schema := arrow.NewSchema(fields, md)
	t.w.WriteHeader(http.StatusOK)
	t.bld = array.NewRecordBuilder(memory.DefaultAllocator, schema)
	t.iw = ipc.NewWriter(t.bw, ipc.WithSchema(schema))
	return nil
}

func (t *arrowTable) row(r *record) error {
	for i, c := range t.cols {
		switch c.kind {
		case kindTime:
			t.bld.Field(i).(*array.TimestampBuilder).Append(arrow.Timestamp(r.t.UnixMicro()))
		case kindString:
			t.bld.Field(i).(*array.StringBuilder).Append(r.s[c.slot])
		case kindFloat:
			t.bld.Field(i).(*array.Float64Builder).Append(r.f[c.slot])
		case kindInt32:
			t.bld.Field(i).(*array.Int32Builder).Append(int32(r.i))
		default:
			t.bld.Field(i).(*array.Int64Builder).Append(r.i)
		}
	}
	t.n++
	if t.n == arrowBatchRows {
		return t.writeBatch()
	}
	return nil
}

func (t *arrowTable) writeBatch() error {
	rec := t.bld.NewRecordBatch()
	defer rec.Release()
	t.n = 0
	if err := t.iw.Write(rec); err != nil {
		return fmt.Errorf("writing an arrow record batch: %w", err)
	}
	return t.flush()
}

func (t *arrowTable) end() error {
	defer t.bld.Release()
	if t.n > 0 {
		if err := t.writeBatch(); err != nil {
			return err
		}
	}
	if err := t.iw.Close(); err != nil { // writes the schema if no batch did, and the end-of-stream marker
		return fmt.Errorf("closing the arrow stream: %w", err)
	}
	return t.flush()
}

// writeTable streams it to w in format, with a Link header to the next
// page when there is one.
func writeTable(w http.ResponseWriter, format string, cols []column, p pageInfo, it *rowIter) error {
	tw := newTableWriter(w, format, cols)
	if p.next != "" {
		w.Header().Set("Link", "<"+p.next+`>; rel="next"`)
	}
	if err := tw.begin(p); err != nil {
		it.close()
		return err
	}
	for it.next() {
		if err := tw.row(&it.rec); err != nil {
			it.close()
			return err
		}
	}
	if err := it.err(); err != nil {
		return err
	}
	return tw.end()
}

// appendJSONFloat appends v as a JSON number, or null for NaN and the
// infinities (which JSON cannot say).
func appendJSONFloat(b []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

func appendJSONStringOrNull(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return appendJSONString(b, s)
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD, and U+2028
// and U+2029 escaped for JavaScript.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
