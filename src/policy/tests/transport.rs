use http::Request;

use crate::policy::transport::token_in_cookie;
use crate::policy::{
    rewrite_dash_mpd, rewrite_dash_mpd_for_host, rewrite_hls_playlist,
    rewrite_hls_playlist_for_host, strip_token_from_query, token_cookie, token_from_request,
    TokenError,
};

const TOKEN: &str = "st=1700000000~exp=4070908800~acl=/live/*~hmac=e2bac91ac3155eb6a9e28836547361297d4e3231874ba34815e01b01f88ecfcc";

fn parts(uri: &str, cookie: Option<&str>) -> http::request::Parts {
    let mut req = Request::get(uri);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.body(()).expect("request").into_parts().0
}

#[test]
fn token_is_found_in_query_then_cookie() {
    let q = parts(&format!("/live/a/master.m3u8?x=1&token={TOKEN}&y=2"), None);
    assert_eq!(
        token_from_request(&q, "token")
            .expect("found")
            .expect("parses")
            .as_str(),
        TOKEN
    );

    let c = parts(
        "/live/a/master.m3u8",
        Some(&format!("theme=dark; token={TOKEN}; z=1")),
    );
    assert_eq!(
        token_from_request(&c, "token")
            .expect("found")
            .expect("parses")
            .as_str(),
        TOKEN
    );
    let quoted = parts("/", Some(&format!("token=\"{TOKEN}\"")));
    assert_eq!(token_in_cookie(&quoted, "token"), Some(TOKEN));

    let renamed = parts(&format!("/live/a.ts?auth={TOKEN}"), None);
    assert!(token_from_request(&renamed, "token").is_none());
    assert!(token_from_request(&renamed, "auth").is_some());

    let none = parts("/live/a/master.m3u8?tokens=1&xtoken=2", Some("other=1"));
    assert!(token_from_request(&none, "token").is_none());
    let empty = parts("/live/a/master.m3u8?token=", None);
    assert!(matches!(
        token_from_request(&empty, "token"),
        Some(Err(TokenError::Malformed(_)))
    ));
}

#[test]
fn stripping_keeps_other_parameters() {
    assert_eq!(
        strip_token_from_query("a=1&token=xyz&b=2", "token"),
        "a=1&b=2"
    );
    assert_eq!(strip_token_from_query("token=xyz", "token"), "");
    assert_eq!(
        strip_token_from_query("token=1&token=2&_HLS_msn=5", "token"),
        "_HLS_msn=5"
    );
    assert_eq!(
        strip_token_from_query("tokens=1&a=2", "token"),
        "tokens=1&a=2"
    );
    assert!(matches!(
        strip_token_from_query("a=1", "token"),
        std::borrow::Cow::Borrowed(_)
    ));
}

const MASTER: &str = "#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI=\"skd://key-42\",KEYFORMAT=\"com.apple.streamingkeydelivery\"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",NAME=\"English\",DEFAULT=YES,URI=\"audio/en/index.m3u8\"
#EXT-X-STREAM-INF:BANDWIDTH=2500000,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"aac\"
720p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,AUDIO=\"aac\"
360p/index.m3u8?lang=en
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=200000,URI=\"720p/iframes.m3u8\"
#EXT-X-STREAM-INF:BANDWIDTH=300000
https://backup.example.net/live/a/360p.m3u8
";

#[test]
fn hls_master_playlist_carries_the_token_to_every_child() {
    let out = rewrite_hls_playlist(MASTER, "token", TOKEN);
    let expected = format!(
        "#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI=\"skd://key-42\",KEYFORMAT=\"com.apple.streamingkeydelivery\"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",NAME=\"English\",DEFAULT=YES,URI=\"audio/en/index.m3u8?token={TOKEN}\"
#EXT-X-STREAM-INF:BANDWIDTH=2500000,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"aac\"
720p/index.m3u8?token={TOKEN}
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,AUDIO=\"aac\"
360p/index.m3u8?lang=en&token={TOKEN}
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=200000,URI=\"720p/iframes.m3u8?token={TOKEN}\"
#EXT-X-STREAM-INF:BANDWIDTH=300000
https://backup.example.net/live/a/360p.m3u8
"
    );
    assert_eq!(out, expected);
}

#[test]
fn hls_media_playlist_map_key_parts_and_crlf() {
    let media = "#EXTM3U\r
#EXT-X-TARGETDURATION:4\r
#EXT-X-MEDIA-SEQUENCE:100\r
#EXT-X-MAP:URI=\"init.mp4\"\r
#EXT-X-KEY:METHOD=AES-128,URI=\"/keys/a?kid=7\",IV=0x00000000000000000000000000000001\r
#EXTINF:4.000,\r
seg-100.m4s\r
#EXT-X-PART:DURATION=1.0,URI=\"seg-101.0.m4s\",INDEPENDENT=YES\r
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg-101.1.m4s\"\r
#EXT-X-RENDITION-REPORT:URI=\"../360p/index.m3u8\",LAST-MSN=101\r
";
    let out = rewrite_hls_playlist(media, "t", "abc");
    assert!(out.contains("#EXT-X-MAP:URI=\"init.mp4?t=abc\"\r\n"));
    assert!(out.contains("URI=\"/keys/a?kid=7&t=abc\",IV=0x"));
    assert!(out.contains("\r\nseg-100.m4s?t=abc\r\n"));
    assert!(out.contains("URI=\"seg-101.0.m4s?t=abc\",INDEPENDENT=YES"));
    assert!(out.contains("URI=\"seg-101.1.m4s?t=abc\""));
    assert!(out.contains("URI=\"../360p/index.m3u8?t=abc\",LAST-MSN"));
    assert!(out.contains("#EXTINF:4.000,\r\n"));
    assert_eq!(out.lines().count(), media.lines().count());
}

#[test]
fn hls_existing_token_is_replaced_and_own_host_urls_are_tokenised() {
    let text = "#EXTM3U\nseg.ts?token=old&x=1\nhttps://edge.example.com/live/b.ts\nhttps://cdn2.example.com/b.ts\n";
    let out = rewrite_hls_playlist_for_host(text, "token", "new", "edge.example.com");
    assert_eq!(
        out,
        "#EXTM3U\nseg.ts?x=1&token=new\nhttps://edge.example.com/live/b.ts?token=new\nhttps://cdn2.example.com/b.ts\n"
    );
}

#[test]
fn token_with_unsafe_characters_is_encoded_whole_and_parses_back() {
    let odd = format!("{TOKEN}&evil=\"1\"");
    let out = rewrite_hls_playlist("a.ts\n", "token", &odd);
    let value = out.trim().strip_prefix("a.ts?token=").expect("appended");
    assert!(!value.contains(['&', '"', '=']), "{value}");
    let decoded = percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .expect("utf8");
    assert_eq!(decoded, odd);
}

const MPD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" profiles="urn:mpeg:dash:profile:isoff-live:2011" minimumUpdatePeriod="PT2S">
  <Location>https://edge.example.com/live/a/manifest.mpd</Location>
  <BaseURL>media/</BaseURL>
  <Period id="p0" start="PT0S">
    <AdaptationSet mimeType="video/mp4" segmentAlignment="true">
      <SegmentTemplate timescale="90000" media="video/$RepresentationID$/seg-$Number%05d$.m4s" initialization="video/$RepresentationID$/init.mp4" startNumber="1" duration="360000"/>
      <Representation id="720p" bandwidth="2500000" width="1280" height="720" codecs="avc1.64001f"/>
    </AdaptationSet>
    <AdaptationSet mimeType="audio/mp4">
      <SegmentTemplate timescale="48000" media='audio/seg-$Time$.m4s?v=2' initialization="https://other.example.org/init.mp4">
        <SegmentTimeline><S t="0" d="96000" r="-1"/></SegmentTimeline>
      </SegmentTemplate>
      <Representation id="aac" bandwidth="128000"/>
    </AdaptationSet>
  </Period>
</MPD>
"#;

#[test]
fn dash_mpd_templates_keep_identifiers_and_gain_the_token() {
    let out = rewrite_dash_mpd(MPD, "token", TOKEN);
    assert!(out.contains(&format!(
        r#"media="video/$RepresentationID$/seg-$Number%05d$.m4s?token={TOKEN}" initialization="video/$RepresentationID$/init.mp4?token={TOKEN}" startNumber="1""#
    )));
    assert!(out.contains(&format!(
        "media='audio/seg-$Time$.m4s?v=2&amp;token={TOKEN}'"
    )));
    assert!(
        out.contains(r#"initialization="https://other.example.org/init.mp4">"#),
        "other hosts untouched"
    );
    assert!(out.contains(&format!("<BaseURL>media/?token={TOKEN}</BaseURL>")));
    assert!(out.contains("<Location>https://edge.example.com/live/a/manifest.mpd</Location>"));
    assert!(out.contains(r#"<S t="0" d="96000" r="-1"/>"#));
    assert!(out.contains(r#"<Representation id="720p" bandwidth="2500000""#));

    let own = rewrite_dash_mpd_for_host(MPD, "token", "abc", "edge.example.com");
    assert!(
        own.contains("<Location>https://edge.example.com/live/a/manifest.mpd?token=abc</Location>")
    );
}

#[test]
fn dash_segment_list_urls_gain_the_token() {
    let mpd = r#"<SegmentList duration="4"><Initialization sourceURL="init.mp4"/><SegmentURL media="seg-1.m4s" mediaRange="0-99"/><SegmentURL media="https://x.example/seg-2.m4s"/></SegmentList>"#;
    let out = rewrite_dash_mpd(mpd, "token", "abc");
    assert_eq!(
        out,
        r#"<SegmentList duration="4"><Initialization sourceURL="init.mp4?token=abc"/><SegmentURL media="seg-1.m4s?token=abc" mediaRange="0-99"/><SegmentURL media="https://x.example/seg-2.m4s"/></SegmentList>"#
    );
}

#[test]
fn dash_dollar_in_token_cannot_start_a_template_identifier() {
    let mpd = r#"<SegmentTemplate media="seg-$Number$.m4s"/>"#;
    let out = rewrite_dash_mpd(mpd, "token", "a$Number$b");
    assert_eq!(
        out,
        r#"<SegmentTemplate media="seg-$Number$.m4s?token=a%24Number%24b"/>"#
    );
}

#[test]
fn cookie_carries_the_token() {
    assert_eq!(
        token_cookie("token", "a=b~c"),
        "token=a=b~c; Path=/; HttpOnly"
    );
}

#[test]
fn steered_manifests_carry_the_token_to_every_pathway_and_the_steering_server() {
    let master = "#EXTM3U\n#EXT-X-CONTENT-STEERING:SERVER-URI=\"http://o.example/steering/c.json\",PATHWAY-ID=\"a\"\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio-a\",NAME=\"main\",URI=\"http://a.example/live/c/main/audio.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1.64001f\",AUDIO=\"audio-a\",PATHWAY-ID=\"a\"\n\
http://a.example/live/c/main/video.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1.64001f\",AUDIO=\"audio-b\",PATHWAY-ID=\"b\"\n\
https://b.example/live/c/main/video.m3u8\n";
    let out = rewrite_hls_playlist(master, "token", "t1");
    assert!(
        out.contains("SERVER-URI=\"http://o.example/steering/c.json?token=t1\",PATHWAY-ID=\"a\"")
    );
    assert!(out.contains("URI=\"http://a.example/live/c/main/audio.m3u8?token=t1\""));
    assert!(out.contains("\nhttp://a.example/live/c/main/video.m3u8?token=t1\n"));
    assert!(out.contains("\nhttps://b.example/live/c/main/video.m3u8?token=t1\n"));
    // Without steering tags, other hosts still never see the token.
    let plain = master.replace("#EXT-X-CONTENT-STEERING", "#EXT-X-SOMETHING");
    assert!(!rewrite_hls_playlist(&plain, "token", "t1").contains("video.m3u8?token"));

    let mpd = "<MPD>\n  <BaseURL serviceLocation=\"a\">http://a.example/live/c/</BaseURL>\n\
  <Location serviceLocation=\"a\">http://a.example/live/c/manifest.mpd</Location>\n\
  <ContentSteering defaultServiceLocation=\"a\" queryBeforeStart=\"true\">http://o.example/steering/c/dash.json</ContentSteering>\n\
  <Period><SegmentTemplate media=\"main/video/$Number$.m4s\"/></Period>\n</MPD>\n";
    let out = rewrite_dash_mpd(mpd, "token", "t1");
    assert!(
        out.contains(">http://a.example/live/c/?token=t1</BaseURL>"),
        "{out}"
    );
    assert!(out.contains(">http://o.example/steering/c/dash.json?token=t1</ContentSteering>"));
    assert!(out.contains("media=\"main/video/$Number$.m4s?token=t1\""));
}
