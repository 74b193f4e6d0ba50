# Post-install scriptlet of the ocore-agent rpm. It never enables or starts the service:
# the agent cannot run before its instances are declared in /etc/ocore/agent.toml and it
# is enrolled (`ocore-agent enroll`). The spec creates /var/lib/ocore-agent (0700 root).
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
