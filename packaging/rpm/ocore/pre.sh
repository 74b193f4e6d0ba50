# Pre-install scriptlet of the ocore (coordinator) rpm: the system user and group the
# coordinator runs as, created before the files so that /etc/ocore/coordinator.toml and
# /var/lib/ocore can be unpacked with group ocore.
getent group ocore >/dev/null || groupadd -r ocore
getent passwd ocore >/dev/null || \
	useradd -r -g ocore -d /var/lib/ocore -M -s /sbin/nologin -c "oCore coordinator" ocore
exit 0
