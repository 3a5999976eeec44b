//! Compatibility with S3 servers that answer slightly off the spec.
//!
//! `rclone serve s3` (the chart's maintained storage engine) answers CreateMultipartUpload
//! with the root element `<InitiateMultipartUpload>` instead of
//! `<InitiateMultipartUploadResult>`. boto3 does not care; aws-sdk-rust refuses the
//! response, which would break every backup larger than one part. This interceptor is
//! attached to that one operation only and renames that one element; every other byte is
//! passed through unchanged.

use std::pin::Pin;
use std::task::{Context, Poll};

use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http_body::{Body, Frame};

#[derive(Debug)]
pub(super) struct InitiateMultipartUploadRoot;

impl Intercept for InitiateMultipartUploadRoot {
    fn name(&self) -> &'static str {
        "InitiateMultipartUploadRoot"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response_mut();
        if response.status().is_success() {
            let body = std::mem::replace(response.body_mut(), SdkBody::taken());
            *response.body_mut() = SdkBody::from_body_1_x(RenameRoot {
                inner: body,
                buf: Vec::new(),
                done: false,
            });
        }
        Ok(())
    }
}

/// Collects the (small) XML response and renames the root element if it is the wrong one.
struct RenameRoot {
    inner: SdkBody,
    buf: Vec<u8>,
    done: bool,
}

impl Body for RenameRoot {
    type Data = Bytes;
    type Error = aws_smithy_types::body::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.buf.extend_from_slice(&data);
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let fixed = rename_root(std::mem::take(&mut this.buf));
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(fixed)))));
                }
            }
        }
    }
}

fn rename_root(body: Vec<u8>) -> Vec<u8> {
    let Ok(text) = String::from_utf8(body) else {
        return Vec::new();
    };
    if text.contains("<InitiateMultipartUploadResult") {
        return text.into_bytes();
    }
    text.replacen("<InitiateMultipartUpload>", "<InitiateMultipartUploadResult>", 1)
        .replacen("<InitiateMultipartUpload ", "<InitiateMultipartUploadResult ", 1)
        .replacen("</InitiateMultipartUpload>", "</InitiateMultipartUploadResult>", 1)
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::rename_root;

    #[test]
    fn renames_only_the_wrong_root() {
        let rclone =
            b"<?xml version=\"1.0\"?>\n<InitiateMultipartUpload>\n<UploadId>u</UploadId>\n</InitiateMultipartUpload>";
        let fixed = String::from_utf8(rename_root(rclone.to_vec())).unwrap();
        assert_eq!(
            fixed,
            "<?xml version=\"1.0\"?>\n<InitiateMultipartUploadResult>\n<UploadId>u</UploadId>\n</InitiateMultipartUploadResult>"
        );
        let aws = b"<InitiateMultipartUploadResult xmlns=\"x\"><UploadId>u</UploadId></InitiateMultipartUploadResult>";
        assert_eq!(rename_root(aws.to_vec()), aws.to_vec());
    }
}
