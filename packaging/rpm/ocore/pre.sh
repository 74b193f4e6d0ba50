# %pre of the ocore (coordinator) rpm: the system user and group the coordinator runs as,
# created before the files so /etc/ocore/coordinator.toml can be unpacked as root:ocore.
getent group ocore >/dev/null || groupadd -r ocore
getent passwd ocore >/dev/null || \
	useradd -r -g ocore -d /var/lib/ocore -M -s /sbin/nologin -c "oCore coordinator" ocore
exit 0
