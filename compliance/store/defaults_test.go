package store_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/compliance/store"
)

// A point's first compliance config gives it the compliance_missing and
// compliance_rejected alert rules, audited; later configs, and a point
// whose owner already has such a rule, get no second one.
func TestDefaultComplianceRulesIntegration(t *testing.T) {
	f := newFixture(t)
	f.point("P1")
	f.point("P2")
	_, err := f.pool.Exec(f.ctx, `INSERT INTO alert_rules (point, kind, params, severity) VALUES ('P2', 'compliance_missing', '{"after": "2h"}', 'critical')`)
	require.NoError(t, err)

	f.config("P1", "2026-06-10")
	_, err = f.store.CreateConfig(f.ctx, actor, store.NewConfig{Point: "P1", Source: compliance.SourceDGAFlujometro,
		Params: dgaParams(), StartDate: date("2026-06-10")})
	require.NoError(t, err)
	f.config("P2", "2026-06-10")

	rules := map[string]int{}
	rows, err := f.pool.Query(f.ctx, `SELECT point || ' ' || kind || ' ' || severity || ' ' || params::text, count(*) FROM alert_rules GROUP BY 1`)
	require.NoError(t, err)
	for rows.Next() {
		var k string
		var n int
		require.NoError(t, rows.Scan(&k, &n))
		rules[k] = n
	}
	require.NoError(t, rows.Err())
	require.Equal(t, map[string]int{
		"P1 compliance_missing warning {}":                   1,
		"P1 compliance_rejected critical {}":                 1,
		"P2 compliance_missing critical {\"after\": \"2h\"}": 1,
		"P2 compliance_rejected critical {}":                 1,
	}, rules)
	var audited int
	require.NoError(t, f.pool.QueryRow(f.ctx, `SELECT count(*) FROM audit_log WHERE action = 'alert_rule.create' AND actor = 'test:root'`).Scan(&audited))
	require.Equal(t, 3, audited)
}
