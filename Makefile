# The two commands of the README. Both install what they need on a fresh Debian machine (as root).
.PHONY: setup demo test lint bench clean

setup:
	@.ci/setup.sh

demo: setup
	UV_PYTHON_DOWNLOADS=never uv run cardsvc demo

test: setup
	UV_PYTHON_DOWNLOADS=never uv run pytest -n auto --cov

lint:
	UV_PYTHON_DOWNLOADS=never uv run ruff format --check .
	UV_PYTHON_DOWNLOADS=never uv run ruff check .
	UV_PYTHON_DOWNLOADS=never uv run mypy

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
