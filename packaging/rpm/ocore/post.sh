# Post-install scriptlet of the ocore (coordinator) rpm: creates the CA once. It never
# enables or starts the service: the operator reviews /etc/ocore/coordinator.toml first
# (the listen address in particular), then runs `systemctl enable --now ocore`. The spec
# creates /var/lib/ocore (0750 ocore:ocore).
if ! runuser -u ocore -- /usr/bin/ocore ca show --config /etc/ocore/coordinator.toml >/dev/null 2>&1; then
	runuser -u ocore -- /usr/bin/ocore ca init --config /etc/ocore/coordinator.toml >/dev/null || \
		echo "ocore: no CA yet; once that is fixed, run: runuser -u ocore -- ocore ca init" >&2
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
