# Pre-uninstall scriptlet of the ocore-agent rpm: on erase (not upgrade) stops and
# disables the unit. Data is never deleted: /var/lib/ocore-agent stays (rpm has no purge).
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
	systemctl --no-reload disable --now ocore-agent.service >/dev/null 2>&1 || :
fi
exit 0
