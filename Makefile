# Creditdesk: `make run` (set up everything and serve) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FLASK := $(VENV)/bin/flask --app wsgi
STAMP := $(VENV)/.installed
# Rate-limit counters go to the machine's Redis when it answers on 127.0.0.1:6379 (shared by every
# process, as in production); otherwise each process counts in memory. An exported REDIS_URL wins.
REDIS_URL ?= $(shell redis-cli -h 127.0.0.1 ping 2>/dev/null | grep -q PONG && echo redis://127.0.0.1:6379/0)

.PHONY: run sandbox test test-fast lint install migrate demo serve bench-smoke e2e clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(FLASK) db upgrade

demo: migrate
	$(FLASK) seed-demo --if-empty

PORT ?= 5000
# make run starts the local Stripe and Razorpay doubles (tests/fakes/serve.py) and points the SDKs
# at them, unless provider keys are exported already or PAYMENT_DOUBLES=0. Demo keys: local only.
PAYMENT_DOUBLES ?= $(if $(STRIPE_SECRET_KEY)$(RAZORPAY_KEY_ID),0,1)
DOUBLES_ENV = $(if $(filter 1,$(PAYMENT_DOUBLES)),eval "$$($(PY) -m tests.fakes.serve --print-env)";)

## run: install, migrate, load demo data once, serve the dashboard on 127.0.0.1:$(PORT) (PORT=8080 make run)
run: demo
	@echo ""
	@echo "  Creditdesk is starting on http://127.0.0.1:$(PORT)"
	@echo "  Sign in as admin@creditdesk.test / demo-admin-password"
	@echo "  (also support@creditdesk.test / demo-support-password, finance@creditdesk.test / demo-finance-password)"
	@echo ""
	@echo "  Rate-limit counters: $(if $(REDIS_URL),Redis at $(REDIS_URL),in memory (no Redis answered on 127.0.0.1:6379))"
	@echo "  Payments: $(if $(filter 1,$(PAYMENT_DOUBLES)),local Stripe and Razorpay doubles; pay checkouts on the Sandbox page or with make sandbox ARGS=\"list\",providers from your environment)"
	@echo ""
	@set -e; $(if $(filter 1,$(PAYMENT_DOUBLES)),$(PY) -m tests.fakes.serve & doubles=$$!; trap 'kill $$doubles 2>/dev/null' EXIT INT TERM;) \
	$(DOUBLES_ENV) \
	SESSION_COOKIE_SECURE=0 SCHEDULER_ENABLED=$${SCHEDULER_ENABLED:-1} LOG_JSON=$${LOG_JSON:-0} \
	  PUBLIC_BASE_URL=$${PUBLIC_BASE_URL:-http://127.0.0.1:$(PORT)} \
	  REDIS_URL="$(REDIS_URL)" $(FLASK) run --host 127.0.0.1 --port $(PORT)

## sandbox: the sandbox CLI against the doubles `make run` started (make sandbox ARGS="pay cs_test_...")
sandbox: install
	@$(DOUBLES_ENV) PUBLIC_BASE_URL=$${PUBLIC_BASE_URL:-http://127.0.0.1:$(PORT)} $(FLASK) sandbox $(ARGS)

## test: the whole suite (PostgreSQL too when TEST_DATABASE_URL is set)
test: install
	$(PY) -m pytest -n 2 --dist loadgroup -q $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -x -m "not e2e and not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

## bench-smoke: the benchmark scripts on tiny data against the local PostgreSQL (seconds, not a
## measurement): proves bench/api_debits.py and bench/pages.py still run end to end
bench-smoke: install
	$(PY) bench/api_debits.py --smoke
	$(PY) bench/pages.py --smoke

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
