package notify_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/stages/notify"
)

// TestEveryTypeHasBothLanguages checks that every notification type of the
// contract (point_notifications.notification_types, plus system) has a
// template in Spanish and in English, that nothing else lingers in
// templates/, and that each renders the point, the value with its unit and
// the local time.
func TestEveryTypeHasBothLanguages(t *testing.T) {
	var want []string
	for _, typ := range accounts.AllNotificationTypes() {
		want = append(want, string(typ))
	}
	want = append(want, "system")
	require.ElementsMatch(t, want, notify.Types)
	require.ElementsMatch(t, []string{"es", "en"}, notify.Languages)

	var files []string
	require.NoError(t, filepath.WalkDir("templates", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, filepath.ToSlash(p))
		}
		return err
	}))
	var expect []string
	for _, lang := range notify.Languages {
		for _, typ := range want {
			expect = append(expect, "templates/"+lang+"/"+typ+".tmpl")
		}
	}
	require.ElementsMatch(t, expect, files, "one template per type and language, nothing else")

	r, err := notify.NewRenderer()
	require.NoError(t, err)
	created := time.Date(2026, 3, 10, 14, 0, 0, 0, time.UTC)
	data := map[string]string{"variable": "flow", "value": "12.5", "unit": "L/s", "at": "2026-03-10T13:05:00Z",
		"state": "opened", "source": "dga-subterraneas", "reason": "bad RUT", "date": "2026-03-09"}
	for _, lang := range notify.Languages {
		for _, typ := range want {
			t.Run(lang+"/"+typ, func(t *testing.T) {
				point, name := "P-1", "Pozo Norte"
				if typ == "system" {
					point, name = "", ""
				}
				v := notify.NewView("n-1", typ, "critical", "Something happened", "Details here.", point, name,
					"America/Santiago", data, created, lang)
				m, err := r.Render(lang, v)
				require.NoError(t, err)
				for what, s := range map[string]string{"subject": m.Subject, "body": m.Body, "sms": m.Short} {
					require.NotEmpty(t, s, what)
					require.NotContains(t, s, "<no value>", what)
				}
				require.NotContains(t, m.Subject, "\n")
				if typ != "system" {
					require.Contains(t, m.Subject+m.Body, "Pozo Norte")
				}
				if typ != "system" && typ != "daily_report" {
					require.Contains(t, m.Body, "10:05", "the time in America/Santiago (UTC-3 in March)")
				}
				if typ == "threshold" {
					wantValue := map[string]string{"es": "12,5 L/s", "en": "12.5 L/s"}[lang]
					require.Contains(t, m.Body, wantValue)
					require.Contains(t, m.Body, map[string]string{"es": "caudal", "en": "flow"}[lang])
				}
			})
		}
	}
}

func TestRenderFallbacks(t *testing.T) {
	r, err := notify.NewRenderer()
	require.NoError(t, err)
	created := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
	// An unknown type uses the system template; an unknown language the
	// default (Spanish); an unknown zone UTC; a value that is not a number
	// stays as it is.
	v := notify.NewView("n", "brand_new", "info", "T", "B", "P", "", "Nowhere/Zone",
		map[string]string{"value": "n/a", "variable": "totalizer"}, created, "fr")
	require.Equal(t, "P", v.PointName, "the code when the name is unknown")
	require.Equal(t, "n/a m³", v.ValueUnit())
	require.Contains(t, v.At, "UTC")
	m, err := r.Render("fr", v)
	require.NoError(t, err)
	require.Equal(t, "[INFO] Stack VPS: T", m.Subject)
	require.Contains(t, m.Body, "Hora:")
}

func TestTemplatesAreUTF8(t *testing.T) {
	files, err := filepath.Glob("templates/*/*.tmpl")
	require.NoError(t, err)
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		require.False(t, strings.Contains(string(b), "\r"), "%s has CR", f)
	}
}
