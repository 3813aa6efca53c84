module github.com/hitless/hitless/examples/wsecho

go 1.26.0

require (
	github.com/gobwas/ws v1.5.0
	github.com/hitless/hitless v0.0.0
)

require (
	github.com/gobwas/httphead v0.1.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

replace github.com/hitless/hitless => ../..
