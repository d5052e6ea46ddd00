package query

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"time"
)

// cursor is a position in a data query's result: the key (point, variable,
// time) of the last row of the previous page. Rows are ordered by that key,
// the rollups' and readings' primary key, so the next page is the rows whose
// key is greater: one index range scan, however deep the page. The client
// sees it as an opaque string.
type cursor struct {
	point, variable string
	time            time.Time
	// query fingerprints the query the cursor belongs to (fingerprint), so
	// a cursor is refused with another query rather than silently
	// positioning it somewhere meaningless.
	query [8]byte
}

// cursorVersion is the first byte of every encoded cursor.
const cursorVersion = 1

// encode returns the cursor as unpadded base64url of: version byte, the
// query fingerprint (8 bytes), the time in Unix microseconds (8 bytes, big
// endian), then the point and the variable, each as a uvarint length and
// its bytes.
func (c cursor) encode() string {
	b := make([]byte, 0, 1+8+8+2*binary.MaxVarintLen16+len(c.point)+len(c.variable))
	b = append(b, cursorVersion)
	b = append(b, c.query[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(c.time.UnixMicro()))
	b = binary.AppendUvarint(b, uint64(len(c.point)))
	b = append(b, c.point...)
	b = binary.AppendUvarint(b, uint64(len(c.variable)))
	b = append(b, c.variable...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor parses s for the query with fingerprint fp. Every failure is
// a 400 naming cursor.
func decodeCursor(s string, fp [8]byte) (cursor, error) {
	bad := func(why string) (cursor, error) {
		return cursor{}, badParam("cursor", "%s; use the next link of the previous page as it is", why)
	}
	if len(s) > maxCursorLen {
		return bad("too long")
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) < 1+8+8 || b[0] != cursorVersion {
		return bad("not a cursor of this API")
	}
	var c cursor
	copy(c.query[:], b[1:9])
	c.time = time.UnixMicro(int64(binary.BigEndian.Uint64(b[9:17]))).UTC()
	rest := b[17:]
	field := func() (string, bool) {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > maxIdentLen || uint64(len(rest)-k) < n {
			return "", false
		}
		v := string(rest[k : k+int(n)])
		rest = rest[k+int(n):]
		return v, true
	}
	var ok1, ok2 bool
	c.point, ok1 = field()
	c.variable, ok2 = field()
	if !ok1 || !ok2 || len(rest) != 0 {
		return bad("not a cursor of this API")
	}
	if c.query != fp {
		return bad("the cursor belongs to another query (point, variable, from, to and bucket must stay the same)")
	}
	return c, nil
}

// fingerprint identifies a data query for its cursors: the bucket, points,
// variables and range, not the page size (which may change between pages).
func fingerprint(bucket string, pts, vars []string, from, to time.Time) [8]byte {
	h := sha256.New()
	write := func(s string) {
		var n [binary.MaxVarintLen64]byte
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
		h.Write([]byte(s))
	}
	write(bucket)
	for _, p := range pts {
		write("p:" + p)
	}
	for _, v := range vars {
		write("v:" + v)
	}
	write(from.UTC().Format(time.RFC3339Nano))
	write(to.UTC().Format(time.RFC3339Nano))
	var out [8]byte
	copy(out[:], h.Sum(nil))
	return out
}
