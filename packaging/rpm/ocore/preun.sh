# Pre-uninstall scriptlet of the ocore (coordinator) rpm: on erase (not upgrade) stops and
# disables the unit. Data is never deleted: /var/lib/ocore and the ocore user stay (rpm
# has no purge).
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
	systemctl --no-reload disable --now ocore.service >/dev/null 2>&1 || :
fi
exit 0
