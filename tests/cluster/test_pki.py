"""The generated CA and certificates verify like a TLS peer would check them."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubeaccel.cluster.pki import CertificateAuthority


def test_issued_certificates_chain_to_the_ca_with_names_and_usages() -> None:
    ca = CertificateAuthority.create()
    pair = ca.issue("kube-apiserver", server=True, dns_names=("localhost",), ip_addresses=("127.0.0.1",))
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    cert.verify_directly_issued_by(ca.cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages and ExtendedKeyUsageOID.CLIENT_AUTH not in usages


def test_client_certificate_carries_group_as_organization() -> None:
    ca = CertificateAuthority.create()
    pair = ca.issue("admin", organization="system:masters", client=True)
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    again = CertificateAuthority.load(*ca.pair.__dict__.values())
    assert again.cert == ca.cert
    assert isinstance(again.key, ec.EllipticCurvePrivateKey)
