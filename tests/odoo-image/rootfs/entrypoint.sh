#!/bin/sh
# The official Odoo image's entrypoint, in busybox sh (it has no bash arrays): HOST, PORT,
# USER and PASSWORD (or the keys of $ODOO_RC) become --db_host, --db_port, --db_user and
# --db_password on Odoo's command line, which is why the official image shows the database
# password in `ps` on the host.

set -e

if [ -n "${PASSWORD_FILE:-}" ]; then PASSWORD="$(cat "$PASSWORD_FILE")"; fi

: "${HOST:=${DB_PORT_5432_TCP_ADDR:=db}}"
: "${PORT:=${DB_PORT_5432_TCP_PORT:=5432}}"
: "${USER:=${DB_ENV_POSTGRES_USER:=${POSTGRES_USER:=odoo}}}"
: "${PASSWORD:=${DB_ENV_POSTGRES_PASSWORD:=${POSTGRES_PASSWORD:=odoo}}}"

# The value from the config file when it sets the key, else the variable's.
config_value() {
    param="$1"
    value="$2"
    if grep -q -E "^\s*\b${param}\b\s*=" "$ODOO_RC"; then
        value=$(grep -E "^\s*\b${param}\b\s*=" "$ODOO_RC" | cut -d " " -f3 | sed 's/["\n\r]//g')
    fi
    printf '%s' "$value"
}

db_host=$(config_value db_host "$HOST")
db_port=$(config_value db_port "$PORT")
db_user=$(config_value db_user "$USER")
db_password=$(config_value db_password "$PASSWORD")

case "${1:-}" in
    -- | odoo)
        shift
        if [ "${1:-}" = "scaffold" ]; then
            exec odoo "$@"
        else
            wait-for-psql.py --db_host "$db_host" --db_port "$db_port" --db_user "$db_user" --db_password "$db_password" --timeout=30
            exec odoo "$@" --db_host "$db_host" --db_port "$db_port" --db_user "$db_user" --db_password "$db_password"
        fi
        ;;
    -*)
        wait-for-psql.py --db_host "$db_host" --db_port "$db_port" --db_user "$db_user" --db_password "$db_password" --timeout=30
        exec odoo "$@" --db_host "$db_host" --db_port "$db_port" --db_user "$db_user" --db_password "$db_password"
        ;;
    *)
        exec "$@"
        ;;
esac

exit 1
