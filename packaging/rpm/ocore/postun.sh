# Post-uninstall scriptlet of the ocore (coordinator) rpm: after an upgrade, restarts the
# coordinator only if it was running.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 1 ]; then
		systemctl try-restart ocore.service >/dev/null 2>&1 || :
	fi
fi
exit 0
