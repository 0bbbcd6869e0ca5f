# Varnish as a caching reverse proxy: the Varnish peer that Strata's edge
# benchmark races.
#
# Placeholders (substitute them, e.g. with sed):
#   __ORIGIN_HOST__  the origin's address, e.g. 127.0.0.1
#   __ORIGIN_PORT__  the origin's port
#
# Storage, listen address and work dir are varnishd flags, not VCL. Run in
# the foreground (stop with SIGTERM) with malloc storage:
#   varnishd -j none -F -f "$DIR/varnish.vcl" -a 127.0.0.1:$PORT -s malloc,1G \
#            -n "$DIR/work" -T none -p vsl_space=1M
# (-f wants an absolute path; -n keeps the work dir and shared memory log in
#  the temp dir; -j none keeps the invoking user, where root would otherwise
#  switch to the varnish users, who can't read a 0700 temp dir; -T none: no
#  management port.) See README.md for the exact commands.

vcl 4.1;

backend origin {
    .host = "__ORIGIN_HOST__";
    .port = "__ORIGIN_PORT__";
    .connect_timeout = 2s;
    .first_byte_timeout = 30s;
    .between_bytes_timeout = 10s;
}

sub vcl_recv {
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # Cache everything: cookies and Authorization don't make a request
    # private here (nginx's proxy_cache ignores them too). Tokens ride in the
    # query string, which is part of the hash.
    unset req.http.Cookie;
    unset req.http.Authorization;
    return (hash);
}

sub vcl_backend_response {
    # Like the nginx peer's proxy_cache_valid 200 10m: 10 minutes unless the
    # origin's Cache-Control or Expires set a lifetime of their own.
    if (beresp.status == 200 && !beresp.http.Cache-Control && !beresp.http.Expires) {
        set beresp.ttl = 10m;
    }
    set beresp.grace = 0s;
    unset beresp.http.Set-Cookie;
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
    set resp.http.Access-Control-Allow-Origin = "*";
}
