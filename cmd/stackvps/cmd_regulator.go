package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/stackvps/stackvps/regulator"
)

func regulatorCommand() *command {
	return &command{
		name:    "regulator",
		summary: "serve a reference DGA and SMA regulator for tests and the demo, with faults on demand",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			listen := fs.String("listen", ":9100", "address to listen on; the base URL is printed on start. It serves the real paths:\n"+
				"POST /api/v1/mediciones/subterraneas, POST /api/v1/mediciones/superficiales/flujometro,\n"+
				"GET /api/v1/mediciones/subterraneas?codigoObra=&numeroComprobante= (DGA);\n"+
				"POST /api/v1/auth, POST /api/v1/ufs/{uf}/procesos/{proceso}/registros (SMA);\n"+
				"and the admin API: POST|GET|DELETE /_admin/faults, GET /_admin/accepted, GET /_admin/requests[?since=SEQ],\n"+
				"POST /_admin/reset, POST /_admin/obras, POST /_admin/sma-users, POST /_admin/tokens/expire, GET /_admin/healthz")
			faults := fs.String("faults", "", "faults active from the start: JSON (a fault or an array of them) or a file holding it, e.g.\n"+
				`{"kind":"server_error","count":2}; kinds: server_error, rate_limit, slow, hang, token_expiry,`+"\n"+
				"duplicate, wrong_informant, no_receipt, reject; keys: kind, endpoint (dga, dga_verify, sma_auth, sma),\n"+
				"match, count, probability, status, message, delay, retry_after")
			obras := fs.String("obras", "", "registered DGA obras: JSON or a file holding it, e.g.\n"+
				`{"OB-0602-7":{"rut_empresa":"77555666-8","rut_usuario":"20999888-2","password":"x"}} (default: any obra, any credentials)`)
			seed := fs.Uint64("seed", 1, "seed of the fault probabilities, receipts and tokens")
			minInterval := fs.Duration("min-interval", 0, "minimum interval between the submissions of one Centro de Control (0: no limit)")
			tokenTTL := fs.Duration("token-ttl", regulator.DefaultTokenTTL, "lifetime of an SMA token")
			params := fs.String("sma-parameters", strings.Join(regulator.DefaultSMAParameters, ","), "parameters every SMA (dispositivo, estampaTiempo) must carry")
			smaDup := fs.String("sma-duplicates", string(regulator.DuplicateIdempotent), "answer to a repeated SMA slot: idempotent, accept or reject")
			maxRequests := fs.Int("max-requests", regulator.DefaultMaxRequests, "requests kept in memory for GET /_admin/requests")
			strictTS := fs.Bool("strict-timestamp", false, "require timeStampOrigen as yyyy-MM-ddTHH:mm:ss-0000")
			requireRegistered := fs.Bool("require-registered", false, "reject submissions for obras not registered with --obras")
			logFormat := fs.String("log-format", "json", "log format: json or text")
			return func(ctx context.Context, e *env, _ []string) error {
				cfg := regulator.Config{
					Seed:              *seed,
					MinInterval:       *minInterval,
					TokenTTL:          *tokenTTL,
					SMADuplicates:     regulator.DuplicateMode(*smaDup),
					MaxRequests:       *maxRequests,
					StrictTimestamp:   *strictTS,
					RequireRegistered: *requireRegistered,
				}
				if *params != "" {
					cfg.SMAParameters = strings.Split(*params, ",")
				}
				if *faults != "" {
					b, err := jsonOrFile(*faults)
					if err != nil {
						return &usageError{"regulator: --faults: " + err.Error()}
					}
					if cfg.Faults, err = regulator.ParseFaults(b); err != nil {
						return &usageError{"regulator: --faults: " + err.Error()}
					}
				}
				if *obras != "" {
					b, err := jsonOrFile(*obras)
					if err == nil {
						err = json.Unmarshal(b, &cfg.Obras)
					}
					if err != nil {
						return &usageError{"regulator: --obras: " + err.Error()}
					}
				}
				if *tokenTTL <= 0 {
					return &usageError{"regulator: --token-ttl must be positive"}
				}
				if *maxRequests <= 0 {
					return &usageError{"regulator: --max-requests must be positive"}
				}
				if err := cfg.Validate(); err != nil {
					return &usageError{"regulator: " + err.Error()}
				}
				var h slog.Handler
				switch *logFormat {
				case "json":
					h = slog.NewJSONHandler(e.stderr, nil)
				case "text":
					h = slog.NewTextHandler(e.stderr, nil)
				default:
					return &usageError{"regulator: --log-format must be json or text"}
				}
				log := slog.New(h).With("component", "regulator")
				cfg.Logger = log
				srv := regulator.New(cfg)
				ln, err := net.Listen("tcp", *listen)
				if err != nil {
					return fmt.Errorf("listening on %s: %w", *listen, err)
				}
				base := baseURL(ln.Addr())
				fmt.Fprintln(e.stdout, base)
				log.Info("regulator listening", "url", base, "faults", len(cfg.Faults), "obras", len(cfg.Obras),
					"seed", cfg.Seed, "min_interval", cfg.MinInterval.String(), "token_ttl", cfg.TokenTTL.String())
				if err := srv.Serve(ctx, ln); err != nil {
					return err
				}
				log.Info("regulator stopped", "accepted", srv.AcceptedReport().Accepted)
				return nil
			}
		},
	}
}

// jsonOrFile returns s when it looks like JSON, else the contents of file s.
func jsonOrFile(s string) ([]byte, error) {
	if t := strings.TrimSpace(s); strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[") {
		return []byte(t), nil
	}
	b, err := os.ReadFile(s)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", s, err)
	}
	return b, nil
}

// baseURL is the http URL of a listening address; an unspecified host
// (":9100") is shown as the loopback address.
func baseURL(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return "http://" + addr.String()
	}
	host := tcp.IP.String()
	if tcp.IP == nil || tcp.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(tcp.Port))
}
