package pipeline_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
)

// metadataRequests counts the Metadata requests a client writes.
type metadataRequests struct{ n atomic.Int64 }

func (m *metadataRequests) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if key == (&kmsg.MetadataRequest{}).Key() && err == nil {
		m.n.Add(1)
	}
}

// An admin client that described a topic as missing asks the broker again
// when describing it after creating it, instead of answering from the
// absence it cached (which made EnsureTopics wait up to 5 s for every
// topic it created).
func TestAdminDoesNotAnswerFromCachedMetadataIntegration(t *testing.T) {
	k := testenv.Kafka(t, 1)
	ctx := context.Background()
	name := k.Topics.Raw + ".fresh"
	var reqs metadataRequests
	adm, err := pipeline.AdminClient(k, kgo.WithHooks(&reqs))
	require.NoError(t, err)
	defer adm.Close()
	st, err := pipeline.Describe(ctx, adm, []string{name})
	require.NoError(t, err)
	require.True(t, st[name].Missing)
	t.Cleanup(func() { _ = pipeline.DeleteTopics(context.Background(), k, []string{name}) })
	resp, err := adm.CreateTopic(ctx, 2, -1, nil, name)
	require.NoError(t, err)
	require.NoError(t, resp.Err)
	// Past the 10 ms the admin client caches metadata for.
	time.Sleep(20 * time.Millisecond)
	before := reqs.n.Load()
	_, err = pipeline.Describe(ctx, adm, []string{name})
	require.NoError(t, err)
	require.Greater(t, reqs.n.Load(), before, "the describe after the creation was answered from cached metadata")
}
