use loyalty::grpc::pb::{google::r#type::Date, loyalty::v1};
use tonic::Code;

use crate::helpers::{assert_status, by_card, by_id, spawn_app, violated_fields};

fn enrollment(request_id: &str, card: &str) -> v1::EnrollMemberRequest {
    v1::EnrollMemberRequest {
        request_id: request_id.into(),
        card_number: card.into(),
        name: "Grace Hopper".into(),
        email: "grace@example.com".into(),
        phone: "+15551234567".into(),
        birthday: Some(Date {
            year: 0,
            month: 12,
            day: 9,
        }),
        consents: Some(v1::Consents {
            email_marketing: true,
            sms_marketing: false,
            profiling: true,
        }),
        referred_by_code: String::new(),
    }
}

#[tokio::test]
async fn enrolled_member_can_be_read_by_id_and_by_card() {
    let app = spawn_app().await;
    let mut members = app.members.clone();
    let enrolled = members
        .enroll_member(enrollment("e-1", "CARD-0001"))
        .await
        .expect("enroll")
        .into_inner()
        .member
        .expect("member");
    assert!(uuid::Uuid::parse_str(&enrolled.member_id).is_ok_and(|u| u.get_version_num() == 7));
    assert_eq!(enrolled.card_number, "CARD-0001");
    assert_eq!(
        enrolled.birthday,
        Some(Date {
            year: 0,
            month: 12,
            day: 9
        })
    );
    assert!(
        enrolled
            .consents
            .as_ref()
            .is_some_and(|c| c.email_marketing && c.profiling && !c.sms_marketing)
    );

    let by_id = members
        .get_member(v1::GetMemberRequest {
            member: Some(by_id(&enrolled.member_id)),
        })
        .await
        .expect("get by id")
        .into_inner()
        .member;
    let by_card = members
        .get_member(v1::GetMemberRequest {
            member: Some(by_card("CARD-0001")),
        })
        .await
        .expect("get by card")
        .into_inner()
        .member;
    assert_eq!(by_id.as_ref(), Some(&enrolled));
    assert_eq!(by_card.as_ref(), Some(&enrolled));
}

#[tokio::test]
async fn duplicate_card_number_is_already_exists() {
    let app = spawn_app().await;
    let mut members = app.members.clone();
    members
        .enroll_member(enrollment("e-1", "CARD-0001"))
        .await
        .expect("first");
    let err = members
        .enroll_member(enrollment("e-2", "CARD-0001"))
        .await
        .expect_err("second");
    assert_status(&err, Code::AlreadyExists, "CARD_NUMBER_TAKEN");
}

#[tokio::test]
async fn bad_enrolment_names_every_bad_field_and_stores_nothing() {
    let app = spawn_app().await;
    let mut members = app.members.clone();
    let err = members
        .enroll_member(v1::EnrollMemberRequest {
            request_id: "bad id with spaces".into(),
            card_number: "12".into(),
            name: String::new(),
            email: "not-an-email".into(),
            phone: "0151".into(),
            birthday: Some(Date {
                year: 1990,
                month: 2,
                day: 30,
            }),
            consents: None,
            referred_by_code: String::new(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(
        violated_fields(&err),
        vec![
            "birthday",
            "card_number",
            "email",
            "name",
            "phone",
            "request_id"
        ]
    );
    assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    let list = members
        .list_members(v1::ListMembersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(list.members.is_empty());
}

#[tokio::test]
async fn unknown_member_is_not_found() {
    let app = spawn_app().await;
    let mut members = app.members.clone();
    let err = members
        .get_member(v1::GetMemberRequest {
            member: Some(by_card("NO-SUCH-CARD")),
        })
        .await
        .expect_err("missing");
    assert_status(&err, Code::NotFound, "MEMBER_NOT_FOUND");
    let err = members
        .get_member(v1::GetMemberRequest {
            member: Some(by_id("not-a-uuid")),
        })
        .await
        .expect_err("malformed id");
    assert_eq!(violated_fields(&err), vec!["member.member_id"]);
    let err = members
        .get_member(v1::GetMemberRequest { member: None })
        .await
        .expect_err("no ref");
    assert_eq!(violated_fields(&err), vec!["member"]);
}

#[tokio::test]
async fn update_changes_only_the_masked_fields() {
    let app = spawn_app().await;
    let mut members = app.members.clone();
    let before = members
        .enroll_member(enrollment("e-1", "CARD-0001"))
        .await
        .expect("enroll")
        .into_inner()
        .member
        .expect("member");
    let after = members
        .update_member(v1::UpdateMemberRequest {
            request_id: "u-1".into(),
            member: Some(v1::Member {
                member_id: before.member_id.clone(),
                name: "Rear Admiral Hopper".into(),
                email: String::new(),
                phone: "+15550000000".into(),
                consents: Some(v1::Consents {
                    sms_marketing: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![
                    "name".into(),
                    "email".into(),
                    "consents.sms_marketing".into(),
                ],
            }),
        })
        .await
        .expect("update")
        .into_inner()
        .member
        .expect("member");
    assert_eq!(after.name, "Rear Admiral Hopper");
    assert_eq!(
        after.email, "",
        "email named in the mask with no value is cleared"
    );
    assert_eq!(after.phone, before.phone, "phone was not in the mask");
    assert_eq!(after.card_number, before.card_number);
    let consents = after.consents.expect("consents");
    assert!(consents.sms_marketing && consents.email_marketing && consents.profiling);
    let secs = |t: &Option<prost_types::Timestamp>| t.as_ref().map(|t| (t.seconds, t.nanos));
    assert!(secs(&after.update_time) > secs(&before.update_time));
    assert_eq!(after.enroll_time, before.enroll_time);

    let read = members
        .get_member(v1::GetMemberRequest {
            member: Some(by_id(&before.member_id)),
        })
        .await
        .expect("get")
        .into_inner()
        .member;
    assert_eq!(read, Some(after));
}

#[tokio::test]
async fn update_rejects_unknown_paths_taken_cards_and_unknown_members() {
    let app = spawn_app().await;
    let mut members = app.members.clone();
    let a = app.enroll("CARD-000A").await;
    app.enroll("CARD-000B").await;
    let err = members
        .update_member(v1::UpdateMemberRequest {
            request_id: "u-1".into(),
            member: Some(v1::Member {
                member_id: a.member_id.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["points".into()],
            }),
        })
        .await
        .expect_err("unknown path");
    assert_eq!(violated_fields(&err), vec!["update_mask"]);

    let err = members
        .update_member(v1::UpdateMemberRequest {
            request_id: "u-2".into(),
            member: Some(v1::Member {
                member_id: a.member_id.clone(),
                card_number: "CARD-000B".into(),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .expect_err("taken card");
    assert_status(&err, Code::AlreadyExists, "CARD_NUMBER_TAKEN");

    let err = members
        .update_member(v1::UpdateMemberRequest {
            request_id: "u-3".into(),
            member: Some(v1::Member {
                member_id: uuid::Uuid::now_v7().to_string(),
                name: "Nobody".into(),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .expect_err("unknown member");
    assert_status(&err, Code::NotFound, "MEMBER_NOT_FOUND");
}

#[tokio::test]
async fn list_members_pages_through_everyone_once_in_enrolment_order() {
    let app = spawn_app().await;
    let mut enrolled = Vec::new();
    for i in 0..7 {
        enrolled.push(app.enroll(&format!("CARD-{i:04}")).await.member_id);
    }
    let mut members = app.members.clone();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = members
            .list_members(v1::ListMembersRequest {
                page_size: 3,
                page_token: token,
            })
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        assert!(page.members.len() <= 3);
        seen.extend(page.members.into_iter().map(|m| m.member_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, enrolled);

    let err = members
        .list_members(v1::ListMembersRequest {
            page_size: 3,
            page_token: "garbage".into(),
        })
        .await
        .expect_err("bad token");
    assert_eq!(violated_fields(&err), vec!["page_token"]);
    let err = members
        .list_members(v1::ListMembersRequest {
            page_size: 501,
            page_token: String::new(),
        })
        .await
        .expect_err("bad size");
    assert_eq!(violated_fields(&err), vec!["page_size"]);
}
