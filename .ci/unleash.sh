#!/usr/bin/env bash
# unleash.sh — a local unleash-server for tagcount's flag tests and for dev.
#
#   bash .ci/unleash.sh install          npm-install unleash-server into the cache (idempotent; all CI needs before tests)
#   bash .ci/unleash.sh home             print the install directory
#   bash .ci/unleash.sh createdb NAME    create PostgreSQL database NAME (no-op if it exists)
#   bash .ci/unleash.sh dropdb NAME      drop PostgreSQL database NAME (no-op if missing)
#   bash .ci/unleash.sh run PORT [DB]    create DB (default tagcount_unleash) and run the server in the foreground on 127.0.0.1:PORT
#
# Environment:
#   TAGCOUNT_UNLEASH_HOME          install directory (default ${XDG_CACHE_HOME:-$HOME/.cache}/tagcount/unleash)
#   TAGCOUNT_UNLEASH_ADMIN_TOKEN   admin API token the server accepts   (default *:*.tagcount-dev-admin-token)
#   TAGCOUNT_UNLEASH_CLIENT_TOKEN  client (backend) token, development env (default default:development.tagcount-dev-client-token)
#   TAGCOUNT_PG_HOST/PORT/USER     PostgreSQL (default 127.0.0.1 / 5432 / postgres, trust auth)
#   TAGCOUNT_UNLEASH_EXIT_ON_STDIN_EOF=1   the server exits when its stdin closes (the Go test helper sets it,
#                                          so a killed test binary never leaves a server behind)
set -euo pipefail

UNLEASH_VERSION=7.5.1
UNLEASH_HOME="${TAGCOUNT_UNLEASH_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tagcount/unleash}"
PG_HOST="${TAGCOUNT_PG_HOST:-127.0.0.1}"
PG_PORT="${TAGCOUNT_PG_PORT:-5432}"
PG_USER="${TAGCOUNT_PG_USER:-postgres}"
ADMIN_TOKEN="${TAGCOUNT_UNLEASH_ADMIN_TOKEN:-*:*.tagcount-dev-admin-token}"
CLIENT_TOKEN="${TAGCOUNT_UNLEASH_CLIENT_TOKEN:-default:development.tagcount-dev-client-token}"

die() { echo "unleash.sh: $*" >&2; exit 1; }

installed_version() {
	local pj="$UNLEASH_HOME/node_modules/unleash-server/package.json"
	[ -f "$pj" ] || return 0
	node -e 'process.stdout.write(require(process.argv[1]).version)' "$pj" 2>/dev/null || true
}

cmd_install() {
	if [ "$(installed_version)" = "$UNLEASH_VERSION" ]; then
		echo "unleash-server@$UNLEASH_VERSION already installed in $UNLEASH_HOME"
		return 0
	fi
	command -v npm >/dev/null || die "npm not found (install Node.js >= 20)"
	mkdir -p "$UNLEASH_HOME"
	[ -f "$UNLEASH_HOME/package.json" ] || echo '{"name":"tagcount-unleash","private":true}' >"$UNLEASH_HOME/package.json"
	echo "installing unleash-server@$UNLEASH_VERSION into $UNLEASH_HOME ..."
	(cd "$UNLEASH_HOME" && npm install --no-audit --no-fund --omit=dev --loglevel=error "unleash-server@$UNLEASH_VERSION")
	[ "$(installed_version)" = "$UNLEASH_VERSION" ] || die "install finished but unleash-server@$UNLEASH_VERSION is not in $UNLEASH_HOME"
	echo "unleash-server@$UNLEASH_VERSION installed in $UNLEASH_HOME"
}

valid_db_name() { [[ "$1" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "bad database name '$1' (want [a-z_][a-z0-9_]*)"; }

psql_admin() { psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -v ON_ERROR_STOP=1 -qtAX "$@"; }

cmd_createdb() {
	local db="${1:?createdb NAME}"
	valid_db_name "$db"
	if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != "1" ]; then
		psql_admin -c "CREATE DATABASE \"$db\"" 2>/dev/null ||
			[ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" = "1" ] ||
			die "cannot create database $db on $PG_HOST:$PG_PORT"
	fi
}

cmd_dropdb() {
	local db="${1:?dropdb NAME}"
	valid_db_name "$db"
	psql_admin -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
}

cmd_run() {
	local port="${1:?run PORT [DB]}" db="${2:-tagcount_unleash}"
	[[ "$port" =~ ^[0-9]+$ ]] || die "bad port '$port'"
	[ "$(installed_version)" = "$UNLEASH_VERSION" ] ||
		die "unleash-server@$UNLEASH_VERSION is not installed in $UNLEASH_HOME: run 'bash .ci/unleash.sh install'"
	cmd_createdb "$db"
	local runner="$UNLEASH_HOME/tagcount-run.mjs"
	cat >"$runner.tmp.$$" <<'JS'
// Written by tagcount's .ci/unleash.sh: starts unleash-server from environment variables.
import { start } from 'unleash-server';
if (process.env.TAGCOUNT_UNLEASH_EXIT_ON_STDIN_EOF === '1') {
	process.stdin.on('end', () => process.exit(0));
	process.stdin.on('error', () => process.exit(0));
	process.stdin.resume();
}
try {
	await start();
} catch (err) {
	console.error('unleash-server failed to start:', err);
	process.exit(1);
}
JS
	mv -f "$runner.tmp.$$" "$runner"
	export DATABASE_HOST="$PG_HOST" DATABASE_PORT="$PG_PORT" DATABASE_USERNAME="$PG_USER" DATABASE_PASSWORD="${TAGCOUNT_PG_PASSWORD:-}"
	export DATABASE_NAME="$db" DATABASE_SSL=false
	export HTTP_HOST=127.0.0.1 HTTP_PORT="$port" UNLEASH_URL="http://127.0.0.1:$port"
	export INIT_ADMIN_API_TOKENS="$ADMIN_TOKEN" INIT_BACKEND_API_TOKENS="$CLIENT_TOKEN"
	export CHECK_VERSION=false SEND_TELEMETRY=false LOG_LEVEL="${TAGCOUNT_UNLEASH_LOG_LEVEL:-warn}"
	export NODE_ENV=production
	cd "$UNLEASH_HOME"
	exec node "$runner"
}

case "${1:-}" in
install) shift; cmd_install "$@" ;;
home) echo "$UNLEASH_HOME" ;;
createdb) shift; cmd_createdb "$@" ;;
dropdb) shift; cmd_dropdb "$@" ;;
run) shift; cmd_run "$@" ;;
*) sed -n '2,15p' "$0" >&2; exit 2 ;;
esac
