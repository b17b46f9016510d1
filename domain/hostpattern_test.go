package domain

import "testing"

func TestParseHostPatterns(t *testing.T) {
	ps, err := ParseHostPatterns(" *.public.blob.vercel-storage.com, cdn.example.com:8443 ,127.0.0.1:9000,[::1]:80,Blob.Example.ORG")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.String())
	}
	want := []string{"*.public.blob.vercel-storage.com", "cdn.example.com:8443", "127.0.0.1:9000", "[::1]:80", "blob.example.org"}
	if len(got) != len(want) {
		t.Fatalf("patterns %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("pattern %d = %s; want %s", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"*", "*.", "https://x.example", "x.example/path", "x.example:0", "x.example:http", "*.10.0.0.1", "-x.example", "a..b", "x_y.example", "[::1"} {
		if _, err := ParseHostPatterns(bad); err == nil {
			t.Errorf("ParseHostPatterns(%q) accepted", bad)
		}
	}
}

func TestHostPattern_Match(t *testing.T) {
	cases := []struct {
		pattern, host, port string
		want                bool
	}{
		{"*.public.blob.vercel-storage.com", "abc.public.blob.vercel-storage.com", "443", true},
		{"*.public.blob.vercel-storage.com", "ABC.Public.Blob.Vercel-Storage.com.", "443", true},
		{"*.public.blob.vercel-storage.com", "public.blob.vercel-storage.com", "443", false},
		{"*.public.blob.vercel-storage.com", "evil-public.blob.vercel-storage.com.attacker.io", "443", false},
		{"*.public.blob.vercel-storage.com", "xpublic.blob.vercel-storage.com", "443", false},
		{"cdn.example.com:8443", "cdn.example.com", "8443", true},
		{"cdn.example.com:8443", "cdn.example.com", "443", false},
		{"cdn.example.com", "cdn.example.com", "80", true},
		{"127.0.0.1:9000", "127.0.0.1", "9000", true},
		{"127.0.0.1:9000", "127.0.0.1", "9001", false},
		{"127.0.0.1:9000", "localhost", "9000", false},
		{"[::1]:80", "::1", "80", true},
	}
	for _, c := range cases {
		ps, err := ParseHostPatterns(c.pattern)
		if err != nil {
			t.Fatal(err)
		}
		if got := ps[0].Match(c.host, c.port); got != c.want {
			t.Errorf("%s.Match(%s, %s) = %v; want %v", c.pattern, c.host, c.port, got, c.want)
		}
	}
	ps, _ := ParseHostPatterns("127.0.0.1:1,localhost:1,*.example")
	if ps[0].IP() == nil || ps[1].IP() != nil || ps[2].IP() != nil {
		t.Errorf("IP(): only the address pattern names an address: %v %v %v", ps[0].IP(), ps[1].IP(), ps[2].IP())
	}
}
