package pipeline

import (
	"context"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stackvps/stackvps/config"
)

// GroupLags returns the lag of every consumer group whose name starts with
// prefix (the stages' groups are "<pipeline.group_prefix>-<stage>"): the
// records between each partition's end and the group's committed offset,
// summed over the group's partitions. The scheduler's health check reads it.
func GroupLags(ctx context.Context, k config.Kafka, prefix string, extra ...kgo.Opt) (map[string]int64, error) {
	adm, err := adminClient(k, extra...)
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing consumer groups: %w", err)
	}
	var groups []string
	for _, g := range listed.Groups() {
		if strings.HasPrefix(g, prefix) {
			groups = append(groups, g)
		}
	}
	out := make(map[string]int64, len(groups))
	if len(groups) == 0 {
		return out, nil
	}
	lags, err := adm.Lag(ctx, groups...)
	if err != nil {
		return nil, fmt.Errorf("reading consumer group lag: %w", err)
	}
	for name, l := range lags {
		if err := l.Error(); err != nil {
			return nil, fmt.Errorf("reading the lag of group %s: %w", name, err)
		}
		out[name] = l.Lag.Total()
	}
	return out, nil
}

// EndOffsets returns, per topic, the sum of its partitions' end offsets:
// the number of records ever appended, which only grows (retention moves the
// start, not the end). The scheduler's health check compares it between runs
// to see dead-letter topics grow.
func EndOffsets(ctx context.Context, k config.Kafka, topics []string, extra ...kgo.Opt) (map[string]int64, error) {
	adm, err := adminClient(k, extra...)
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	listed, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("listing end offsets: %w", err)
	}
	if err := listed.Error(); err != nil {
		return nil, fmt.Errorf("listing end offsets: %w", err)
	}
	out := make(map[string]int64, len(topics))
	for topic, parts := range listed {
		var sum int64
		for _, o := range parts {
			sum += max(o.Offset, 0)
		}
		out[topic] = sum
	}
	return out, nil
}
