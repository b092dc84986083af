#!/usr/bin/env bash
# Regenerates the test PKI for verify/tests/nvidia_revocation.rs (not NVIDIA's: a
# P-384 root -> intermediate -> leaf of our own, with CRLs and OCSP responses made
# by `openssl ca` / `openssl ocsp`). `now.txt` records when they were made.
set -euo pipefail
cd "$(dirname "$0")"
rm -rf work && mkdir work && cd work
cat > ca.cnf <<'CNF'
[ca]
default_ca = CA
[CA]
dir = .
database = $dir/index-$ENV::NAME.txt
new_certs_dir = .
serial = $dir/serial
default_md = sha384
default_crl_days = 30
crl_extensions = crl_ext
policy = any
unique_subject = no
[any]
commonName = supplied
[crl_ext]
authorityKeyIdentifier = keyid:always
[v3_ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
[v3_leaf]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
CNF
export NAME=root
touch index-root.txt index-int.txt; echo 1000 > serial
key() { openssl ecparam -name secp384r1 -genkey -noout -out "$1.key"; }
key root; key int; key leaf
openssl req -x509 -new -key root.key -sha384 -subj "/CN=Test Root" -days 3650 -out root.pem \
    -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -new -key int.key -subj "/CN=Test Intermediate" -out int.csr
NAME=root openssl ca -batch -config ca.cnf -cert root.pem -keyfile root.key -extensions v3_ca -days 3650 -in int.csr -out int.pem -notext
openssl req -new -key leaf.key -subj "/CN=Test Leaf" -out leaf.csr
NAME=int openssl ca -batch -config ca.cnf -cert int.pem -keyfile int.key -extensions v3_leaf -days 3650 -in leaf.csr -out leaf.pem -notext
# CRLs by the root: one with nothing revoked, one revoking the intermediate.
NAME=root openssl ca -batch -config ca.cnf -cert root.pem -keyfile root.key -gencrl -out root-good.crl.pem
cp index-root.txt index-root.bak
NAME=root openssl ca -batch -config ca.cnf -cert root.pem -keyfile root.key -revoke int.pem
NAME=root openssl ca -batch -config ca.cnf -cert root.pem -keyfile root.key -gencrl -out root-revoked.crl.pem
cp index-root.bak index-root.txt
# OCSP for the leaf, signed by its issuer: good, then revoked.
openssl ocsp -issuer int.pem -sha384 -cert leaf.pem -no_nonce -reqout leaf.req
openssl ocsp -index index-int.txt -rsigner int.pem -rkey int.key -CA int.pem -reqin leaf.req -rmd sha384 -ndays 30 -respout leaf-good.ocsp
NAME=int openssl ca -batch -config ca.cnf -cert int.pem -keyfile int.key -revoke leaf.pem
openssl ocsp -index index-int.txt -rsigner int.pem -rkey int.key -CA int.pem -reqin leaf.req -rmd sha384 -ndays 30 -respout leaf-revoked.ocsp
cd ..
for f in root.pem int.pem leaf.pem; do openssl x509 -in work/$f -outform der -out "${f%.pem}.der"; done
openssl crl -in work/root-good.crl.pem -outform der -out root-good.crl
openssl crl -in work/root-revoked.crl.pem -outform der -out root-revoked.crl
cp work/leaf-good.ocsp work/leaf-revoked.ocsp .
date +%s > now.txt
rm -rf work
