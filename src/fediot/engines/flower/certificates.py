"""Certificates and device keys for a secure Flower deployment, with Python ``cryptography``.

Security (Flower 1.42): TLS on the SuperLink's one HTTP port (``--ssl-certfile``,
``--ssl-keyfile``, ``--ssl-ca-certfile``; devices and the ``flwr`` CLI verify it against the CA)
and SuperNode authentication (``--enable-supernode-auth``: only SuperNodes whose public key was
registered with ``flwr supernode register`` may connect; a SuperNode proves its key with
``--auth-supernode-private-key``). Without TLS a process may only use a loopback address.
The material comes from :func:`create_ca`, :func:`create_server_certificate` and
:func:`create_device_key` (Python ``cryptography``; no ``openssl`` needed)::

    certs/ca.crt  ca.key           the FedIoT CA (ca.key stays with whoever issues certificates)
    certs/server.pem  server.key   the SuperLink's certificate, its host names as subjectAltNames
    certs/devices/device-N.key     device N's node-authentication key (OpenSSH EC P-384)
    certs/devices/device-N.pub     its public key: the SuperLink admits the keys found here
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fediot.core.catalog import device_by_id
from fediot.core.errors import FediotError

CA_CERTIFICATE = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERTIFICATE = "server.pem"
SERVER_KEY = "server.key"
DEVICE_KEYS = "devices"
"""File names inside a certificates folder (see the module docstring)."""

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
"""Always in the server certificate: the SuperLink's own ServerApp executor and the ``flwr`` CLI
reach it over loopback (Flower rewrites a 0.0.0.0 bind to 127.0.0.1 for them)."""




def local_host(bind_host: str) -> str:
    """The address a process on this machine uses to reach a server bound to ``bind_host``."""
    host = bind_host.strip("[]")
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _write_atomic(path: Path, data: bytes, *, private: bool) -> None:
    """Write via a temp file in the same folder; a private file is 0600 from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temp).chmod(0o600 if private else 0o644)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_private_file(path: Path, data: bytes) -> None:
    """``data`` into ``path``, 0600 from its first byte, replaced atomically (a secret)."""
    _write_atomic(path, data, private=True)


def _prepare_folder(folder: Path) -> None:
    """Create the folder (0700) with a ``.gitignore`` so private keys never reach git."""
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700)
    if not (folder / ".gitignore").exists():
        _write_atomic(folder / ".gitignore", b"# keys and certificates: never committed\n*\n",
                      private=False)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _refuse_overwrite(path: Path, overwrite: bool, flag: str) -> None:
    if path.exists() and not overwrite:
        raise FediotError(f"{path} exists; replacing it invalidates what it signed or "
                          f"identified ({flag} to replace it)")


def create_ca(folder: Path, *, common_name: str = "FedIoT CA", days: int = 3650,
              overwrite: bool = False) -> Path:
    """A self-signed CA (EC P-384): ``folder/ca.crt`` and ``folder/ca.key`` (0600).

    Parameters
    ----------
    folder : where to write; created 0700 with a ``.gitignore`` of ``*``.
    common_name : the CA's subject (default ``"FedIoT CA"``).
    days : validity (default 3650).
    overwrite : replace an existing CA (default False: an error, since every certificate it
        signed stops being trusted).
    """
    if days < 1:
        raise FediotError(f"days: {days} is not a positive number of days")
    _refuse_overwrite(folder / CA_KEY, overwrite, "--force")
    _prepare_folder(folder)
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA384())
    )
    _write_atomic(folder / CA_KEY, _pem_key(key), private=True)
    _write_atomic(folder / CA_CERTIFICATE, certificate.public_bytes(serialization.Encoding.PEM),
                  private=False)
    return folder / CA_CERTIFICATE


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    if not host or any(c.isspace() or c in "/:@" for c in host):
        raise FediotError(f"--host {host!r} is neither an IP address nor a host name")
    return x509.DNSName(host)


def _load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    certificate = _load_certificate(folder / CA_CERTIFICATE)
    path = folder / CA_KEY
    if not path.is_file():
        raise FediotError(f"{path}: no CA key (create the CA with "
                          f"`fediot certs ca --dir {folder}`)")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise FediotError(f"{path}: not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _matches(key, certificate):
        raise FediotError(f"{path} is not the key of {folder / CA_CERTIFICATE}")
    return certificate, key


def create_server_certificate(folder: Path, hosts: Sequence[str], *, days: int = 825) -> Path:
    """The SuperLink's certificate ``folder/server.pem`` + key ``server.key`` (0600), signed by
    the CA in ``folder``.

    Parameters
    ----------
    hosts : every name or IP the devices use to reach the server (subjectAltNames; the first is
        the subject). localhost, 127.0.0.1 and ::1 are always added (see ``LOOPBACK_NAMES``).
    days : validity (default 825, the longest clients commonly accept).
    """
    if not hosts:
        raise FediotError("give at least one --host: the name or IP devices connect to")
    if days < 1:
        raise FediotError(f"days: {days} is not a positive number of days")
    names: list[x509.GeneralName] = []
    for host in [*hosts, *LOOPBACK_NAMES]:
        name = _general_name(host)
        if name not in names:
            names.append(name)
    ca_certificate, ca_key = _load_ca(folder)
    key = _new_key()
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_certificate.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_certificate.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=True, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    _write_atomic(folder / SERVER_KEY, _pem_key(key), private=True)
    _write_atomic(folder / SERVER_CERTIFICATE,
                  certificate.public_bytes(serialization.Encoding.PEM), private=False)
    return folder / SERVER_CERTIFICATE


def device_key_paths(folder: Path, device: int) -> tuple[Path, Path]:
    """``(private, public)`` node-authentication key files of device ``device`` in ``folder``."""
    base = folder / DEVICE_KEYS / f"device-{device}"
    return base.with_suffix(".key"), base.with_suffix(".pub")


def create_device_key(folder: Path, device: int, *, overwrite: bool = False) -> Path:
    """Device ``device``'s node-authentication key pair (EC P-384, OpenSSH format, as Flower's
    ``--auth-supernode-private-key`` and ``flwr supernode register`` read them):
    ``folder/devices/device-N.key`` (0600) and ``device-N.pub``; returns the public key's path.

    ``overwrite`` (default False) replaces an existing pair: the old key is no longer admitted.
    """
    try:
        label = device_by_id(device).name
    except KeyError as error:
        raise FediotError(str(error.args[0])) from None
    private_path, public_path = device_key_paths(folder, device)
    _refuse_overwrite(private_path, overwrite, "--force")
    _prepare_folder(folder)
    key = _new_key()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    _write_atomic(private_path, private, private=True)
    _write_atomic(public_path, public + f" fediot-device-{device}-{label}\n".encode(),
                  private=False)
    return public_path


def _matches(key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> bool:
    """Whether ``key`` is the private half of ``certificate``'s public key."""
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(der, spki) == certificate.public_key().public_bytes(
        der, spki)


def _load_certificate(path: Path) -> x509.Certificate:
    if not path.is_file():
        raise FediotError(f"{path}: no such certificate")
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as error:
        raise FediotError(f"{path}: not a PEM certificate ({error})") from None
    now = dt.datetime.now(dt.UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise FediotError(f"{path}: not valid now (valid from "
                          f"{certificate.not_valid_before_utc:%Y-%m-%d} to "
                          f"{certificate.not_valid_after_utc:%Y-%m-%d})")
    return certificate


def load_node_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """An OpenSSH EC public key file (``device-N.pub``); a clear error otherwise."""
    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except (OSError, ValueError, UnsupportedAlgorithm) as error:
        raise FediotError(f"{path}: not an OpenSSH public key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise FediotError(f"{path}: Flower node authentication needs an EC (NIST curve) key")
    return key


def load_node_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """An OpenSSH EC private key file (``device-N.key``); a clear error otherwise."""
    if not path.is_file():
        raise FediotError(f"{path}: no such node key (create it with "
                          "`fediot certs device N --dir DIR` on the machine holding the CA)")
    if path.stat().st_mode & 0o077:
        raise FediotError(f"{path}: a private key readable by others (chmod 600 {path})")
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise FediotError(f"{path}: not an unencrypted OpenSSH private key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise FediotError(f"{path}: Flower node authentication needs an EC (NIST curve) key")
    return key


@dataclass(frozen=True)
class ServerSecurity:
    """A SuperLink's TLS material and the device keys it admits (see :meth:`load`).

    Parameters
    ----------
    ca_certificate, certificate, private_key : ``ca.crt``, ``server.pem``, ``server.key``.
    node_public_keys : the OpenSSH public keys of the SuperNodes allowed to connect.
    """

    ca_certificate: Path
    certificate: Path
    private_key: Path
    node_public_keys: tuple[Path, ...]

    @classmethod
    def load(cls, folder: Path, host: str, node_keys: Path | None = None) -> ServerSecurity:
        """Check ``folder`` (ca.crt, server.pem, server.key) and the allowed node keys
        (``node_keys``, default ``folder/devices``: every ``*.pub``): the server certificate
        must be signed by the CA, match its key and name ``host`` (127.0.0.1 or ::1 when
        ``host`` binds every interface)."""
        folder = folder.resolve()
        if not folder.is_dir():
            raise FediotError(f"{folder}: no certificates folder (create one with "
                              "scripts/make-certs.sh or `fediot certs`)")
        ca = _load_certificate(folder / CA_CERTIFICATE)
        server = _load_certificate(folder / SERVER_CERTIFICATE)
        try:
            server.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise FediotError(f"{folder / SERVER_CERTIFICATE} is not signed by "
                              f"{folder / CA_CERTIFICATE}") from None
        key_path = folder / SERVER_KEY
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as error:
            raise FediotError(f"{key_path}: not an unencrypted PEM private key "
                              f"({error})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not _matches(key, server):
            raise FediotError(f"{key_path} is not the key of {folder / SERVER_CERTIFICATE}")
        _require_name(server, folder / SERVER_CERTIFICATE, host)
        keys_dir = (node_keys or folder / DEVICE_KEYS).resolve()
        public_keys = tuple(sorted(keys_dir.glob("*.pub"))) if keys_dir.is_dir() else ()
        if not public_keys:
            raise FediotError(f"{keys_dir}: no device public keys (*.pub); node authentication "
                              "admits only listed devices (`fediot certs device N --dir DIR`)")
        for path in public_keys:
            load_node_public_key(path)
        return cls(folder / CA_CERTIFICATE, folder / SERVER_CERTIFICATE, key_path, public_keys)


def _require_name(certificate: x509.Certificate, path: Path, host: str) -> None:
    # bound to every interface, the server is reached here over loopback; the devices' name
    # for it cannot be known
    host = local_host(host)
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise FediotError(f"{path} has no subjectAltName") from None
    listed = [str(n) for n in names.get_values_for_type(x509.DNSName)]
    listed += [str(n) for n in names.get_values_for_type(x509.IPAddress)]
    wanted = _general_name(host)
    if wanted not in list(names):
        raise FediotError(f"{path} does not name {host} (it names {', '.join(listed)}); "
                          f"recreate it with `fediot certs server --host {host} --dir DIR`")


@dataclass(frozen=True)
class NodeSecurity:
    """A SuperNode's TLS trust anchor and its node-authentication key (see :meth:`load`).

    Parameters
    ----------
    root_certificates : the CA certificate the SuperLink's certificate must chain to.
    private_key : the device's OpenSSH EC private key (its public half must be registered).
    """

    root_certificates: Path
    private_key: Path

    @classmethod
    def load(cls, root_certificates: Path, private_key: Path) -> NodeSecurity:
        """Check both files before a SuperNode is started with them."""
        _load_certificate(root_certificates)
        load_node_private_key(private_key)
        return cls(root_certificates.resolve(), private_key.resolve())
