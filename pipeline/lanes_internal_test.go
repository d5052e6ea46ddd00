package pipeline

import (
	"fmt"
	"hash/maphash"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestLanesPerPartition(t *testing.T) {
	for _, c := range []struct{ partitions, procs, want int }{
		{0, 2, 1},
		{1, 2, 4},  // one partition's backlog: four lanes on two procs
		{3, 2, 2},  // 6 lanes for 4 goroutines wanted
		{4, 2, 1},  // enough partitions
		{12, 2, 1}, // a live poll across the topic: no split
		{1, 8, 16},
	} {
		require.Equal(t, c.want, lanesPerPartition(c.partitions, c.procs), "%d partitions, %d procs", c.partitions, c.procs)
	}
}

// splitByKey keeps every record once, a key's records in one lane and in
// offset order, and does not split partitions too small to be worth it.
func TestSplitByKey(t *testing.T) {
	seed := maphash.MakeSeed()
	recs := make([]*kgo.Record, 1000)
	for i := range recs {
		recs[i] = &kgo.Record{Key: fmt.Appendf(nil, "dev-%d", i%37), Offset: int64(i)}
	}
	recs[500].Key = nil // a record without a key goes to a lane like any other

	lanes := splitByKey(recs, 4, seed)
	require.Len(t, lanes, 4, "37 keys in 4 lanes leave none empty")
	seen := map[int64]bool{}
	laneOf := map[string]int{}
	for l, lane := range lanes {
		require.Equal(t, len(lane), cap(lane), "a lane cannot be appended over the next")
		for i, r := range lane {
			require.False(t, seen[r.Offset], "offset %d twice", r.Offset)
			seen[r.Offset] = true
			if i > 0 {
				require.Greater(t, r.Offset, lane[i-1].Offset, "lane %d out of order", l)
			}
			if prev, ok := laneOf[string(r.Key)]; ok {
				require.Equal(t, prev, l, "key %q in two lanes", r.Key)
			}
			laneOf[string(r.Key)] = l
		}
	}
	require.Len(t, seen, len(recs))

	require.Len(t, splitByKey(recs, 1, seed), 1)
	small := recs[:2*minLaneRecords-1]
	one := splitByKey(small, 4, seed)
	require.Len(t, one, 1, "fewer than two lanes' worth of records stay whole")
	require.Equal(t, small, one[0])
	require.Len(t, splitByKey(recs[:2*minLaneRecords], 4, seed), 2)
	require.Equal(t, [][]*kgo.Record{nil}, splitByKey(nil, 4, seed))
}
