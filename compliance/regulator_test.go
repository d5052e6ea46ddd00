package compliance_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/regulator"
)

// newRegulator starts the reference regulator and returns the sources
// pointed at it the way a deployment does: compliance.sources overrides
// of the built-in endpoints.
func newRegulator(t *testing.T, cfg regulator.Config) (*regulator.Server, map[string]compliance.Source) {
	t.Helper()
	reg := regulator.New(cfg)
	srv := httptest.NewServer(reg.Handler())
	t.Cleanup(func() { reg.Close(); srv.Close() })
	c := config.Default().Compliance
	c.Sources = config.SourceConfigs{
		"dga-subterraneas":             {Endpoint: srv.URL + "/api/v1/mediciones/subterraneas", RequestTimeout: config.Duration(500 * time.Millisecond)},
		"dga-superficiales-flujometro": {Endpoint: srv.URL + "/api/v1/mediciones/superficiales/flujometro"},
		"sma":                          {Endpoint: srv.URL + "/api/v1", RequestTimeout: config.Duration(500 * time.Millisecond)},
	}
	srcs, err := compliance.Sources(c)
	require.NoError(t, err)
	return reg, byCode(srcs)
}

// The clients interoperate with the independent reference regulator: a
// first send is confirmed with a receipt, a resend is recognised as a
// duplicate with the same receipt, verification finds it, and faults map
// to the outcomes the submitter expects.
func TestAgainstReferenceRegulatorDGA(t *testing.T) {
	reg, srcs := newRegulator(t, regulator.Config{
		StrictTimestamp: true,
		Obras:           map[string]regulator.Obra{"OB-0602-7": {RutEmpresa: "77555666-8", RutUsuario: "20999888-2", Password: "clave-informante"}},
	})
	protos := compliance.NewProtocols(nil)
	p := protos[compliance.ProtocolDGA]
	src := srcs["dga-subterraneas"]
	ctx := context.Background()
	send := func(slot compliance.Slot) compliance.Outcome {
		req, err := p.Prepare(ctx, src, slot, time.Now())
		require.NoError(t, err)
		return p.Send(ctx, src, slot, req)
	}

	o := send(dgaSlot())
	require.Equal(t, compliance.Confirmed, o.Kind, "%s %s", o.Reason, o.Response)
	require.Len(t, o.Receipt, 32)
	first := o.Receipt

	o = send(dgaSlot())
	require.Equal(t, compliance.Confirmed, o.Kind, o.Reason)
	require.Equal(t, first, o.Receipt, "the duplicate answer gives the original comprobante")
	require.Equal(t, 1, reg.Accepted()[regulator.DGAKey("OB-0602-7", "2026-06-11", "13:00:00")])

	v := p.(compliance.Verifier).Verify(ctx, src, dgaSlot(), first)
	require.Equal(t, compliance.Confirmed, v.Kind, "%s %s", v.Reason, v.Response)
	require.Equal(t, compliance.Rejected, p.(compliance.Verifier).Verify(ctx, src, dgaSlot(), "nope").Kind)

	slot := dgaSlot()
	slot.At = slot.At.Add(time.Hour)
	slot.Params.InformantRUT = "76086428-5"
	require.Equal(t, compliance.RejectedTerminal, send(slot).Kind)

	faults := []struct {
		fault regulator.Fault
		kind  compliance.OutcomeKind
	}{
		{regulator.Fault{Kind: regulator.FaultServerError, Endpoint: regulator.EndpointDGA, Count: 1}, compliance.Transient},
		{regulator.Fault{Kind: regulator.FaultRateLimit, Endpoint: regulator.EndpointDGA, Count: 1, RetryAfter: 3 * time.Second}, compliance.RateLimited},
		{regulator.Fault{Kind: regulator.FaultSlow, Endpoint: regulator.EndpointDGA, Count: 1, Delay: 2 * time.Second}, compliance.Unknown},
		{regulator.Fault{Kind: regulator.FaultNoReceipt, Endpoint: regulator.EndpointDGA, Count: 1}, compliance.Confirmed},
		{regulator.Fault{Kind: regulator.FaultReject, Endpoint: regulator.EndpointDGA, Count: 1}, compliance.Rejected},
	}
	for i, f := range faults {
		require.NoError(t, reg.AddFaults(f.fault))
		slot := dgaSlot()
		slot.At = slot.At.Add(time.Duration(10+i) * time.Hour)
		o := send(slot)
		require.Equal(t, f.kind, o.Kind, "%s: %s", f.fault.Kind, o.Reason)
		if f.fault.Kind == regulator.FaultRateLimit {
			require.Equal(t, 3*time.Second, o.RetryAfter)
		}
		if f.fault.Kind == regulator.FaultSlow {
			// The data arrived although the answer did not: a resend
			// recovers the comprobante from the duplicate answer.
			o = send(slot)
			require.Equal(t, compliance.Confirmed, o.Kind, o.Reason)
			require.NotEmpty(t, o.Receipt)
		}
	}
	require.Empty(t, reg.AcceptedReport().Violations)

	flu := srcs["dga-superficiales-flujometro"]
	slot = dgaSlot()
	slot.At = slot.At.Add(48 * time.Hour)
	req, err := p.Prepare(ctx, flu, slot, time.Now())
	require.NoError(t, err)
	o = p.Send(ctx, flu, slot, req)
	require.Equal(t, compliance.Confirmed, o.Kind, "%s %s", o.Reason, o.Response)
}

func TestAgainstReferenceRegulatorSMA(t *testing.T) {
	reg, srcs := newRegulator(t, regulator.Config{SMAUsers: map[string]string{"76086428-5": "sma-pass"}})
	p := compliance.NewProtocols(nil)[compliance.ProtocolSMA]
	src := srcs["sma"]
	ctx := context.Background()
	send := func(slot compliance.Slot) compliance.Outcome {
		req, err := p.Prepare(ctx, src, slot, time.Now())
		require.NoError(t, err)
		return p.Send(ctx, src, slot, req)
	}
	o := send(smaSlot())
	require.Equal(t, compliance.Confirmed, o.Kind, "%s %s", o.Reason, o.Response)
	require.NotEmpty(t, o.Receipt)
	require.Equal(t, 1, reg.Accepted()[regulator.SMAKey("1234", "55", "12180", "2026-05-17T14:00:00")])

	reg.ExpireTokens()
	slot := smaSlot()
	slot.At = slot.At.Add(time.Hour)
	o = send(slot)
	require.Equal(t, compliance.Confirmed, o.Kind, "re-authenticated after expiry: %s", o.Reason)

	require.NoError(t, reg.AddFaults(regulator.Fault{Kind: regulator.FaultServerError, Endpoint: regulator.EndpointSMA, Count: 1}))
	slot.At = slot.At.Add(time.Hour)
	require.Equal(t, compliance.Transient, send(slot).Kind)

	slot.Credentials.Password = "wrong"
	slot.At = slot.At.Add(time.Hour)
	o = p.Send(ctx, src, slot, mustPrepare(t, p, src, slot))
	// The cached token still works for the same usuario; a new protocol
	// instance has to authenticate and is refused.
	require.Equal(t, compliance.Confirmed, o.Kind)
	fresh := compliance.NewProtocols(nil)[compliance.ProtocolSMA]
	slot.At = slot.At.Add(time.Hour)
	o = fresh.Send(ctx, src, slot, mustPrepare(t, fresh, src, slot))
	require.Equal(t, compliance.RejectedTerminal, o.Kind, o.Reason)
	require.Empty(t, reg.AcceptedReport().Violations)
}

func mustPrepare(t *testing.T, p compliance.Protocol, src compliance.Source, slot compliance.Slot) compliance.Request {
	t.Helper()
	req, err := p.Prepare(context.Background(), src, slot, time.Now())
	require.NoError(t, err)
	return req
}
