# Stack VPS. `make test` and `make demo` work on a fresh Debian machine: they
# install and start PostgreSQL 15, Mosquitto and Kafka (KRaft) on loopback
# through deploy/local/services, with data under .local/.
SHELL       := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO          ?= go
BIN         := bin/stackvps
SERVICES    := deploy/local/services
ENVFILE     := .local/env
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TEST_TIMEOUT ?= 25m
DEMO_SECONDS ?= 30

.PHONY: all build test unit lint services services-down services-status demo bench chaos clean help

all: build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build bin/stackvps
	$(GO) build -trimpath -o $(BIN) ./cmd/stackvps

services: ## install (when missing) and start PostgreSQL, Mosquitto and Kafka on loopback
	$(SERVICES) up

services-down: ## stop the local services (data stays in .local/)
	$(SERVICES) down

services-status: ## show what runs where
	$(SERVICES) status

lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.local/*')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

unit: ## tests that need no services
	$(GO) test -count=1 -short ./...

test: lint services build ## services up, migrations, every test (integration tests may not skip)
	source $(ENVFILE) && ./$(BIN) migrate >/dev/null && ./$(BIN) doctor
	source $(ENVFILE) && STACKVPS_TEST_REQUIRE=1 $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

demo: services build ## services up, the pipeline running, a simulated fleet publishing; shows data flowing
	DEMO_SECONDS=$(DEMO_SECONDS) deploy/local/demo

bench: services build ## benchmarks against the raw limits, results in benchmarks/results/
	source $(ENVFILE) && benchmarks/run

# chaos STOPS, KILLS AND RESTARTS the local services (deploy/local/services
# stop|kill|restart pg|mqtt|kafka) under a running pipeline to prove the delivery
# guarantees, and brings them back up at the end: nothing else may use them
# meanwhile. `make test` skips these tests for that reason. SVC_*_PORT in the
# environment move the services as for `make services`.
chaos: services ## fault tests of the ingest spine (stops and restarts the local services)
	source $(ENVFILE) && STACKVPS_TEST_CHAOS=1 STACKVPS_TEST_REQUIRE=1 STACKVPS_TEST_SERVICES=$(abspath $(SERVICES)) \
	  $(GO) test -count=1 -timeout 20m -run '^TestChaos' -v ./internal/e2e/

clean: ## remove build output (not service data; see services-down and deploy/local/services purge)
	rm -rf bin
