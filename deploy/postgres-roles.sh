#!/bin/sh
# Runs once, when the compose `postgres` service initialises an empty data volume
# (mounted into /docker-entrypoint-initdb.d). Creates Settle's two roles, neither a
# superuser (README "Database roles"):
#   settle_owner  owns the `settle` database and every table; `settle migrate` only.
#   settle_app    what the app connects as; `settle migrate` grants it exactly
#                 domain/db_roles.APP_GRANTS after each upgrade.
# The superuser (POSTGRES_USER, `postgres`) is used by nothing else.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v owner_password="$SETTLE_DB_OWNER_PASSWORD" \
    -v app_password="$SETTLE_DB_APP_PASSWORD" <<'SQL'
CREATE ROLE settle_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'owner_password';
CREATE ROLE settle_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'app_password';
ALTER DATABASE settle OWNER TO settle_owner;
ALTER SCHEMA public OWNER TO settle_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
