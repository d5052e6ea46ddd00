package pipeline

import "time"

// Header is one Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is what stages see of a Kafka record. On input, Topic, Partition and
// Offset say where it came from; on output, Topic names the destination (empty
// means the stage's default output) and Partition and Offset are ignored.
// A Processor must not retain a Record or its slices after returning.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
	// Time is the record timestamp; zero on output lets Kafka stamp it.
	Time time.Time
}

// Header returns the value of the last header named key.
func (r Record) Header(key string) ([]byte, bool) {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == key {
			return r.Headers[i].Value, true
		}
	}
	return nil, false
}

// Header keys the runtime writes on dead letters.
const (
	// HeaderError says why a record was dead-lettered (the error text).
	HeaderError = "error"
	// HeaderErrorReason is the low-cardinality reason, as counted in metrics.
	HeaderErrorReason = "error-reason"
	// HeaderErrorStage names the stage that gave up on the record.
	HeaderErrorStage = "error-stage"
	// HeaderSourceTopic, HeaderSourcePartition and HeaderSourceOffset locate
	// the original record, for replay after a fix.
	HeaderSourceTopic     = "source-topic"
	HeaderSourcePartition = "source-partition"
	HeaderSourceOffset    = "source-offset"
)
