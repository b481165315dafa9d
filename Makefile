# The two commands of the README. Both install what they need on a fresh Debian machine (as root).
.PHONY: setup demo test lint bench clean

setup:
	@.ci/setup.sh

demo: setup
	UV_PYTHON_DOWNLOADS=never uv run cardsvc demo

# The suite writes Python's bytecode caches (gitignored) even where the shell asks for none
# (PYTHONDONTWRITEBYTECODE): each interpreter it starts (its workers, every
# cardsvc serve, hsm-sim, biller-sim, agent and command) then loads the code base and its
# libraries from them instead of compiling them again, and pytest keeps its rewritten tests.
# `make test COVERAGE=1` (CI) also measures the money modules' branch coverage and fails below
# its floor; measuring adds about a quarter to the run's CPU, so a plain `make test` does not.
test: setup
	env -u PYTHONDONTWRITEBYTECODE UV_PYTHON_DOWNLOADS=never uv run pytest -n auto $(if $(COVERAGE),--cov)

lint:
	UV_PYTHON_DOWNLOADS=never uv run ruff format --check .
	UV_PYTHON_DOWNLOADS=never uv run ruff check .
	UV_PYTHON_DOWNLOADS=never uv run mypy

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
