module github.com/wsbridge/wsbridge

go 1.26.8

require (
	filippo.io/age v1.3.2 // indirect
	filippo.io/hpke v0.4.0 // indirect
	github.com/go-stomp/stomp/v3 v3.1.5 // indirect
	github.com/klauspost/compress v1.17.9 // indirect
	github.com/lxzan/gws v1.9.1 // indirect
	go.yaml.in/yaml/v3 v3.0.6 // indirect
	golang.org/x/crypto v0.55.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
)
