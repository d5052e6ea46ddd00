package pipeline_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
)

// An admin client that described a topic as missing sees it as soon as it
// is created, instead of answering from the absence it cached (which made
// EnsureTopics wait up to 5 s for every topic it created).
func TestAdminSeesCreatedTopicAtOnceIntegration(t *testing.T) {
	k := testenv.Kafka(t, 1)
	ctx := context.Background()
	name := k.Topics.Raw + ".fresh"
	adm, err := pipeline.AdminClient(k)
	require.NoError(t, err)
	defer adm.Close()
	st, err := pipeline.Describe(ctx, adm, []string{name})
	require.NoError(t, err)
	require.True(t, st[name].Missing)
	t.Cleanup(func() { _ = pipeline.DeleteTopics(context.Background(), k, []string{name}) })
	resp, err := adm.CreateTopic(ctx, 2, -1, nil, name)
	require.NoError(t, err)
	require.NoError(t, resp.Err)
	st, err = pipeline.Describe(ctx, adm, []string{name})
	require.NoError(t, err)
	require.False(t, st[name].Missing, "the topic was created, but the client answers from its cached metadata")
	require.Equal(t, 2, st[name].Partitions)
}
