#!/bin/sh
# Makes the certificates the TLS unit tests use (valid for 100 years): a CA, two server
# certificates for 127.0.0.1 (to test rotation) and a client certificate.
set -eu
cd "$(dirname "$0")"
days=36500
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days $days \
    -subj "/CN=Sluice test CA" -keyout ca.key -out ca.pem
for name in server server2; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
        -keyout $name.key -out $name.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > $name.ext
    openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days $days \
        -extfile $name.ext -out $name.pem
    rm $name.csr $name.ext
done
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/C=DE/O=Acme, Inc./OU=Fleet/CN=device-42" -keyout client.key -out client.csr
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days $days \
    -extfile client.ext -out client.pem
rm client.csr client.ext ca.srl ca.key
