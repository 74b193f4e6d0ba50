# %post of the ocore-agent rpm: creates the agent's private state directory. It never
# enables or starts the service: the agent cannot run before its instances are declared in
# /etc/ocore/agent.toml and it is enrolled (`ocore-agent enroll`).
install -d -o root -g root -m 0700 /var/lib/ocore-agent
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
